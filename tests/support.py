"""Helpers shared by every test: event factories and raw-record builders (one place, so tests read as sentences)."""


import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from dataclasses import dataclass
from datetime import datetime, timezone

from contracts import OrderItem, OrderPlaced, PaymentAuthorized, PaymentDeclined, Record, encode, source_of
from contracts.connection import client_options

NOW = datetime(2026, 11, 24, 16, 0, tzinfo=timezone.utc)


def unique_order_id(prefix: str = "ord-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def an_order(
    *,
    order_id: str | None = None,
    customer_id: str = "cus-1042",
    lines: tuple[tuple[str, int, int], ...] = (("SKU-TEA-001", 2, 1250),),
    currency: str = "EUR",
    total_cents: int | None = None,
) -> OrderPlaced:
    """A valid order; `lines` are (sku, quantity, unit price in cents); the total is their sum unless given."""
    items = tuple(OrderItem(sku=s, quantity=q, unit_price_cents=p) for s, q, p in lines)
    return OrderPlaced(
        order_id=order_id or unique_order_id(),
        customer_id=customer_id,
        items=items,
        currency=currency,
        total_cents=sum(q * p for _, q, p in lines) if total_cents is None else total_cents,
        placed_at=NOW,
    )


def an_order_costing(cents: int, **kwargs) -> OrderPlaced:
    return an_order(lines=(("SKU-ESPRESSO-006", 1, cents),), **kwargs)


def an_authorization(order: OrderPlaced | None = None) -> PaymentAuthorized:
    order = order or an_order()
    return PaymentAuthorized(
        order_id=order.order_id, customer_id=order.customer_id, payment_id=f"pay-{order.order_id}",
        amount_cents=order.total_cents, currency=order.currency, authorized_at=NOW,
    )


def a_decline(order: OrderPlaced | None = None, reason: str = "over_limit") -> PaymentDeclined:
    order = order or an_order()
    return PaymentDeclined(
        order_id=order.order_id, customer_id=order.customer_id, amount_cents=order.total_cents,
        currency=order.currency, reason=reason, declined_at=NOW,
    )


def signer_of(signer: str = "storefront"):
    """The current private key of one of the run's dev signers (tests/conftest.py made them)."""
    import os

    from fleet.runtime.keys import KeyStore

    return KeyStore.for_signer(Path(os.environ["FLEET_KEYS_DIR"]), signer).signer()


def a_record(event, *, service: str = "storefront", correlation_id: str | None = None, signer=None, now=None) -> Record:
    """The signed record a publisher would send; by default signed with the storefront's dev key."""
    return encode(event, source=source_of(service), signer=signer or signer_of(service), correlation_id=correlation_id, now=now)


def raw_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    """Headers as Kafka delivers them: a list of (name, bytes)."""
    return [(name, value.encode("utf-8")) for name, value in headers.items()]


@dataclass(frozen=True)
class FakeRecord:
    """The few ConsumerRecord fields our code reads, for pure tests."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list
    timestamp: int = 0


@dataclass
class Captured:
    """An event some handler published, as it would travel: key, headers, decoded event."""

    key: str
    headers: dict
    event: object


def capture(broker, model) -> list[Captured]:
    """Registers a listener on the topic of `model` on an in-memory broker; returns the list it fills."""
    from faststream.kafka import KafkaMessage

    from contracts import REGISTRY, decode_value

    topic = REGISTRY.of(model)
    seen: list[Captured] = []

    @broker.subscriber(topic.name, group_id=f"capture-{topic.name}")
    async def listener(body: Any, message: KafkaMessage) -> None:
        raw = message.raw_message
        headers = {k: v.decode() for k, v in raw.headers}
        seen.append(Captured(raw.key.decode(), headers, decode_value(topic, raw.value)))

    return seen


# ---- Real-broker helpers -------------------------------------------------------------------------

@dataclass(frozen=True)
class Seen:
    """A record read back from the broker, decoded."""

    topic: str
    partition: int
    offset: int
    key: str
    headers: dict
    event: object  # None for a record of a topic outside the registry (a dead-letter topic)
    value: bytes = b""


async def end_offsets(bootstrap: str, topic_names) -> dict:
    """Where each partition of the topics ends now: everything published after this lies beyond."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from fleet.ops.topics import partitions_of

    counts = await partitions_of(bootstrap, list(topic_names))
    partitions = [TopicPartition(n, p) for n, c in counts.items() for p in range(c)]
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap, group_id: str) -> dict:
    """What the group has committed now: {TopicPartition: offset} (partitions it never committed are missing)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group_id)).items()}
    finally:
        await admin.close()


async def start_group_at_end(bootstrap: str, group_id: str, models) -> None:
    """A new consumer group whose committed offsets are the topics' current ends, so a service started in it
    handles only what the test publishes, not the topics' whole history; its retry groups likewise."""
    from contracts import REGISTRY

    topics = [REGISTRY.of(m) for m in models]
    await _commit_ends(bootstrap, group_id, [t.name for t in topics])
    for tier in range(1, 4):
        await _commit_ends(bootstrap, f"{group_id}.retry.{tier}", [t.retry_topic(tier) for t in topics])


async def _commit_ends(bootstrap: str, group_id: str, names: list[str]) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import OffsetAndMetadata

    ends = await end_offsets(bootstrap, names)
    consumer = AIOKafkaConsumer(**client_options(bootstrap), group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in ends.items()})
    finally:
        await consumer.stop()


class TopicReader:
    """Reads what lands on topics after the moment it was created, until it has what a test waits for."""

    def __init__(self, bootstrap: str, models=(), *, raw_topics=(), starts: dict | None = None) -> None:
        from contracts import REGISTRY

        self.bootstrap = bootstrap
        self.topics = {REGISTRY.of(m).name: REGISTRY.of(m) for m in models} | {name: None for name in raw_topics}
        self.starts: dict = starts or {}
        self.seen: list[Seen] = []

    async def __aenter__(self) -> "TopicReader":
        from aiokafka import AIOKafkaConsumer

        self.starts = self.starts or await end_offsets(self.bootstrap, self.topics)
        self._consumer = AIOKafkaConsumer(**client_options(self.bootstrap), enable_auto_commit=False)
        await self._consumer.start()
        self._consumer.assign(list(self.starts))
        for partition, offset in self.starts.items():
            self._consumer.seek(partition, offset)
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._consumer.stop()

    async def wait_for(self, done, timeout_s: float = 60.0) -> list[Seen]:
        """Reads until `done(seen)` is true; fails the test with what it saw if the time runs out."""
        import asyncio

        from contracts import decode_value

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done(self.seen):
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s; saw {len(self.seen)} records: {[(s.topic, s.key) for s in self.seen][:20]}")
            batches = await self._consumer.getmany(timeout_ms=250)
            for records in batches.values():
                for r in records:
                    headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
                    topic = self.topics[r.topic]
                    event = decode_value(topic, r.value) if topic else None
                    key = r.key.decode("utf-8", "replace") if r.key else ""
                    self.seen.append(Seen(r.topic, r.partition, r.offset, key, headers, event, r.value or b""))
        return self.seen

    async def wait_for_keys(self, keys, per_key: int = 1, timeout_s: float = 60.0) -> list[Seen]:
        """Waits until every key has `per_key` records (records of other keys, from other tests, are ignored)."""
        wanted = set(keys)

        def done(seen):
            counts = {}
            for s in seen:
                if s.key in wanted:
                    counts[s.key] = counts.get(s.key, 0) + 1
            return all(counts.get(k, 0) >= per_key for k in wanted)

        await self.wait_for(done, timeout_s)
        return [s for s in self.seen if s.key in wanted]


async def produce_raw(bootstrap: str, records) -> None:
    """Publishes (topic, key, value, headers[, partition]) tuples with a plain aiokafka producer: no eventfleet code on the way."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic, key, value, headers, *partition in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers, partition=partition[0] if partition else None)
    finally:
        await producer.stop()


def as_raw(record):
    """An eventfleet Record as (topic, key, value, headers) for `produce_raw`."""
    return record.topic, record.key.encode(), record.value, raw_headers(record.headers)


class BrokerOnly:
    """What RunningApps needs of an app, for a test that builds a bare broker: something with a `broker`."""

    def __init__(self, broker) -> None:
        self.broker = broker


class RunningApps:
    """Starts the brokers of FastStream apps in this process and stops them after; `assignments()` shows who owns what."""

    def __init__(self, *apps) -> None:
        self.apps = apps

    async def __aenter__(self) -> "RunningApps":
        for app in self.apps:
            # A FastStream app runs its startup hooks (stores, relays) too; a bare broker holder just starts the broker.
            await (app.start() if hasattr(app, "start") else app.broker.start())
        return self

    async def __aexit__(self, *exc_info) -> None:
        for app in self.apps:
            await (app.stop() if hasattr(app, "stop") else app.broker.stop())

    def assignments(self, app) -> set:
        owned = set()
        for subscriber in app.broker.subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is not None:
                owned |= {(tp.topic, tp.partition) for tp in consumer.assignment()}
        return owned


class InMemoryProducer:
    """Stands in for an outbox relay's Kafka producer in in-memory tests: publishes into FastStream's test broker."""

    def __init__(self) -> None:
        self.broker = None  # set once the app exists: `producer.broker = app.broker`

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, key: bytes, headers: list):
        import asyncio

        await self.broker.publish(value, topic, key=key, headers={k: v.decode() for k, v in headers})
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def in_memory(create_app, settings):
    """A service app whose outbox relay publishes into the in-memory broker: inside `async with TestKafkaBroker(app.broker)`,
    `await app.start()` opens its store, and `await app.stop()` lets the relay publish what was committed."""
    from fleet.runtime.delivery.dead_letters import MemorySink

    producer = InMemoryProducer()
    app = create_app(settings, producer=producer)
    producer.broker = app.broker
    app.broker.dead_letters.sink = MemorySink()  # dead letters and retries stay in memory too
    return app


@contextmanager
def running_gateway(settings):
    """The gateway under uvicorn on a free port, in a thread with its own event loop: the real Publisher, the real lifespan."""
    import threading
    import time

    import uvicorn

    from services.gateway import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def properties(text: str) -> dict[str, str]:
    """A Java properties file as a dict; as in Java, the last line of a key wins (the secure broker relies on it)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def flow_steps(lines: list[str]) -> dict[str, set[str]]:
    """Which topics each key has appeared on, from `fleet watch` lines (`time  topic  key  what  corr=...`)."""
    steps: dict[str, set[str]] = {}
    for line in lines:
        parts = line.split()
        if "corr=" in line and len(parts) > 3:
            steps.setdefault(parts[2], set()).add(parts[1].rsplit(".", 1)[0])
    return steps


WHOLE_FLOW = {"orders.placed", "payments.authorized", "notifications.sent"}


@dataclass
class FleetUpRun:
    returncode: int
    lines: list[str]  # what `fleet up` printed until an order's whole flow was seen
    rest: str  # what it printed after Ctrl-C

    @property
    def saw_an_order_through(self) -> bool:
        return any(WHOLE_FLOW <= steps for steps in flow_steps(self.lines).values())


def fleet_up_until_an_order_is_through(cwd, env: dict | None = None, give_up_s: float = 120.0) -> FleetUpRun:
    """What `make run` does: `fleet up --demo` until one order is seen placed, authorized and notified, then Ctrl-C."""
    import signal
    import subprocess
    import sys
    import threading

    process = subprocess.Popen([sys.executable, "-m", "fleet", "up", "--demo", "--orders", "5", "--every", "0.5"], cwd=cwd,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    give_up = threading.Timer(give_up_s, process.send_signal, [signal.SIGINT])  # it runs until Ctrl-C: never hang the suite
    give_up.start()
    try:
        for line in process.stdout:
            lines.append(line.rstrip())
            if any(WHOLE_FLOW <= steps for steps in flow_steps(lines).values()):
                break
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        give_up.cancel()
        if process.poll() is None:
            process.kill()
    return FleetUpRun(process.returncode, lines, rest)
