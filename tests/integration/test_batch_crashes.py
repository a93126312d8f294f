"""Issue 17's promise on the real broker: a crash at any point of a batch neither loses nor doubles an effect.

payments runs as its own process (`python -m fleet run payments`) on a SQLite store of the test's own, in a consumer
group of its own started at the end of orders.placed.v1. A first run is killed by the crash injection of
fleet.runtime.faults (SIGKILL at a chosen point of a batch), a second run without faults finishes the work; the store
(read with sqlite3) and the wire (every outcome record, read back to the topics' ends) then show each order decided
once: one outcome event id per order, one ledger row per authorized order, one inbox claim per order.

Beside the crashes, an outage: a batch that comes while payments' PostgreSQL store cannot be reached (a TCP proxy in
front of the test database, cut and restored), with a poison record in it.
"""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from aiokafka.structs import TopicPartition

from contracts import REGISTRY, OrderPlaced, PaymentAuthorized, PaymentDeclined
from tests.support import (
    NotYet,
    Seen,
    TcpProxy,
    TopicReader,
    a_record,
    a_record_that_is_not_a_valid_order,
    an_order,
    an_order_costing,
    as_raw,
    committed_offsets,
    end_offsets,
    eventually,
    produce_raw,
    produce_raw_in_one_batch,
    start_group_at_end,
)

ROOT = Path(__file__).resolve().parents[2]
ORDERS = REGISTRY.of(OrderPlaced).name
DLQ = REGISTRY.of(OrderPlaced).dead_letter_topic
AUTHORIZED, DECLINED = REGISTRY.of(PaymentAuthorized).name, REGISTRY.of(PaymentDeclined).name
OUTCOME_TOPICS = (AUTHORIZED, DECLINED)
DEFAULT_LIMIT_CENTS = 100_000  # payments' default credit limit: an order costing more is declined
OVER_THE_LIMIT_CENTS = 150_000
ORDERS_PER_RUN = 300
CRASH_AFTER = 100  # records the first run handles before its crash point may strike
SMALL_BATCH = 50  # so that a run is several batches, and a crash cuts between two of them
FAULTS = ("FLEET_FAULTS_CRASH_AT", "FLEET_FAULTS_CRASH_AFTER", "FLEET_FAULTS_SLOW_S", "FLEET_FAULTS_SLOW_COUNT")


# ---- the payments process ----------------------------------------------------------------------------------------


class PaymentsProcess:
    """`python -m fleet run payments` with the test's broker, group and store (an SQLite file, or a store URL); its JSON
    log lines in a file."""

    def __init__(
        self, kafka: str, group_id: str, store: Path | str, log_path: Path, *, batch: int, **faults: str
    ) -> None:
        self.log_path = log_path
        env = {name: value for name, value in os.environ.items() if name not in FAULTS}
        env.update(
            FLEET_KAFKA_BOOTSTRAP_SERVERS=kafka,
            FLEET_KAFKA_BATCH_MAX_RECORDS=str(batch),
            FLEET_KEYS_DIR=os.environ["FLEET_KEYS_DIR"],  # the session's dev keys (tests/conftest.py)
            FLEET_LOG_FORMAT="json",
            PAYMENTS_GROUP_ID=group_id,
            PAYMENTS_STORE_URL=store if isinstance(store, str) else f"sqlite:///{store}",
            PAYMENTS_HTTP_PORT="0",
            PYTHONUNBUFFERED="1",  # every line reaches the file before a SIGKILL
            **{f"FLEET_FAULTS_{name.upper()}": value for name, value in faults.items()},
        )
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fleet", "run", "payments"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def ended(self, timeout_s: float) -> int:
        """Its exit code once it has ended (-9: killed by SIGKILL)."""
        await eventually(
            lambda: self.process.poll() is not None or NotYet(self.tail()),
            f"payments (pid {self.process.pid}) to end",
            timeout_s=timeout_s,
            every_s=0.2,
        )
        return self.process.returncode

    async def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, as an orchestrator stops it: it finishes its batch, flushes and marks its outbox, and exits."""
        self.process.send_signal(signal.SIGTERM)
        return await self.ended(timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def lines(self) -> list[dict]:
        text = self.log_path.read_text(errors="replace")
        lines = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                if line.startswith("{"):
                    lines.append(json.loads(line))
        return lines

    def decisions(self) -> dict[str, Counter]:
        """What each event_handled line says the handler decided: {decided: Counter of event ids}."""
        found: dict[str, Counter] = defaultdict(Counter)
        for line in self.lines():
            if line.get("event") == "event_handled":
                found[line.get("decided", "")][line.get("event_id")] += 1
        return found

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def payments(*args, **kwargs):
    """A payments process for the block; killed at the end if it still runs (a failing test leaves none behind)."""
    process = PaymentsProcess(*args, **kwargs)
    try:
        yield process
    finally:
        process.kill()


# ---- the store, as the worker left it ----------------------------------------------------------------------------


def query(store: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """The rows of one query on the worker's SQLite file, read while no worker writes (after a crash or a stop)."""
    with contextlib.closing(sqlite3.connect(store)) as connection:
        return connection.execute(sql, params).fetchall()


def claims(store: Path, group_id: str) -> set[str]:
    return {event_id for (event_id,) in query(store, "SELECT event_id FROM inbox WHERE group_id = ?", (group_id,))}


def ledger_rows_per_order(store: Path) -> Counter:
    return Counter(order_id for (order_id,) in query(store, "SELECT order_id FROM ledger"))


def outbox_rows_per_order(store: Path) -> Counter:
    return Counter(key for (key,) in query(store, "SELECT key FROM outbox"))


def unmarked_outbox_ids(store: Path) -> set[str]:
    return {ce_id for (ce_id,) in query(store, "SELECT ce_id FROM outbox WHERE published_at IS NULL")}


# ---- the broker --------------------------------------------------------------------------------------------------


def orders(count: int, tag: str) -> list[OrderPlaced]:
    """Orders with distinct ids; one in five over the credit limit, so both outcomes are exercised."""
    run = uuid.uuid4().hex[:8]
    return [
        an_order_costing(OVER_THE_LIMIT_CENTS, order_id=f"ord-{tag}-{run}-{n:03d}")
        if n % 5 == 4
        else an_order(order_id=f"ord-{tag}-{run}-{n:03d}")
        for n in range(count)
    ]


def expected_topic(order: OrderPlaced) -> str:
    return DECLINED if order.total_cents > DEFAULT_LIMIT_CENTS else AUTHORIZED


async def read_to_the_end(kafka: str, reader: TopicReader, topics) -> list[Seen]:
    """Reads until the reader has every record on `topics` up to their ends as they are now."""
    ends = {tp: end for tp, end in (await end_offsets(kafka, topics)).items() if end > reader.starts.get(tp, 0)}

    def at_the_end(seen: list[Seen]) -> bool:
        last: dict[TopicPartition, int] = {}
        for s in seen:
            tp = TopicPartition(s.topic, s.partition)
            last[tp] = max(last.get(tp, -1), s.offset)
        return all(last.get(tp, -1) >= end - 1 for tp, end in ends.items())

    return await reader.wait_for(at_the_end, timeout_s=60)


async def lag_is_zero(kafka: str, group_id: str):
    """True once the group has committed every partition of orders.placed.v1 up to its end (nothing to redeliver)."""
    ends = await end_offsets(kafka, [ORDERS])
    committed = await committed_offsets(kafka, group_id, list(ends))
    lag = {f"{tp.topic}/{tp.partition}": end - committed.get(tp, -1) for tp, end in ends.items()}
    return all(left <= 0 for left in lag.values()) or NotYet(lag)


def outcome_ids_per_order(seen: list[Seen], wanted: list[OrderPlaced]) -> dict[str, Counter]:
    """{order id: Counter of the outcome event ids (ce_id) on the wire for it}, for every wanted order."""
    found: dict[str, Counter] = {order.order_id: Counter() for order in wanted}
    for s in seen:
        if s.topic in OUTCOME_TOPICS and s.key in found:
            found[s.key][s.headers["ce_id"]] += 1
    return found


def assert_each_order_decided_once(seen: list[Seen], placed: dict[str, Seen], wanted: list[OrderPlaced]) -> None:
    """On the wire: one outcome event id per order (the same id may come twice: a republication), on the topic its
    credit rule says, caused by the order's own event."""
    ids = outcome_ids_per_order(seen, wanted)
    missing = sorted(order_id for order_id, found in ids.items() if not found)
    assert not missing, f"{len(missing)} orders without an outcome: {missing[:10]}"
    doubled = {order_id: dict(found) for order_id, found in ids.items() if len(found) > 1}
    assert not doubled, f"an order decided twice (two outcome event ids): {doubled}"
    by_id = {order.order_id: order for order in wanted}
    for s in seen:
        if s.topic in OUTCOME_TOPICS and s.key in by_id:
            assert s.topic == expected_topic(by_id[s.key]), (s.key, s.topic)
            assert s.headers["ce_causationid"] == placed[s.key].headers["ce_id"], s.key


def assert_the_store_holds_each_effect_once(
    store: Path, group_id: str, placed: dict[str, Seen], wanted: list[OrderPlaced]
) -> None:
    """One inbox claim per order, one ledger row per authorized order (none for a declined one), one outbox row per
    order, and none left unmarked after a clean stop."""
    ours = {placed[o.order_id].headers["ce_id"] for o in wanted}
    assert claims(store, group_id) & ours == ours, "every order's event is claimed once"
    authorized = {o.order_id for o in wanted if expected_topic(o) == AUTHORIZED}
    ledger = ledger_rows_per_order(store)
    charged = {order_id: n for order_id, n in ledger.items() if order_id in placed}
    assert charged == dict.fromkeys(authorized, 1), "one ledger row per authorized order, none for a declined one"
    outbox = outbox_rows_per_order(store)
    assert {o.order_id: outbox[o.order_id] for o in wanted} == {o.order_id: 1 for o in wanted}, "one outbox row each"
    assert not unmarked_outbox_ids(store), "a clean stop marks everything it published"


async def produce_and_read_back(kafka: str, records) -> dict[str, Seen]:
    """Publishes the orders' records and returns each as the broker holds it (partition, offset, headers), by key."""
    async with TopicReader(kafka, [OrderPlaced]) as reader:
        await produce_raw(kafka, [as_raw(r) for r in records])
        seen = await reader.wait_for_keys([r.key for r in records], timeout_s=60)
    return {s.key: s for s in seen}


# ---- the tests ---------------------------------------------------------------------------------------------------


@pytest.mark.timeout(420)
async def a_first_run_killed_at(kafka: str, group_id: str, store: Path, log: Path, crash_at: str) -> None:
    """Payments runs until the injected fault SIGKILLs it at `crash_at`, after CRASH_AFTER records; fails otherwise."""
    with payments(
        kafka, group_id, store, log, batch=SMALL_BATCH, crash_at=crash_at, crash_after=str(CRASH_AFTER)
    ) as first:
        code = await first.ended(timeout_s=180)
        assert code == -signal.SIGKILL, f"the first run was to die by SIGKILL, it exited {code}:\n{first.tail()}"


async def test_a_sigkill_between_a_batchs_store_commit_and_its_offset_commit_neither_loses_nor_doubles_a_payment(
    kafka, group_id, tmp_path
):
    """The first run dies right after a batch's store commit, before its offsets: that batch is redelivered to the
    second run, whose inbox recognises every order of it as decided already."""
    store = tmp_path / "payments.db"
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    wanted = orders(ORDERS_PER_RUN, "crash-commit")
    async with TopicReader(kafka, [PaymentAuthorized, PaymentDeclined]) as outcomes:
        placed = await produce_and_read_back(kafka, [a_record(o) for o in wanted])
        ours = {s.headers["ce_id"] for s in placed.values()}

        await a_first_run_killed_at(kafka, group_id, store, tmp_path / "first.log", "batch_committed")

        # The window was hit: the store decided orders whose records the group's committed offsets do not cover.
        committed = await committed_offsets(kafka, group_id, list(await end_offsets(kafka, [ORDERS])))
        decided_before = claims(store, group_id) & ours

        def covered(s: Seen) -> bool:
            return s.offset < committed[TopicPartition(s.topic, s.partition)]

        uncovered = {s.headers["ce_id"] for s in placed.values() if not covered(s)} & decided_before
        assert uncovered, f"no decided order beyond the committed offsets {committed}: the crash missed its window"
        assert {s.headers["ce_id"] for s in placed.values() if covered(s)} <= decided_before, (
            "an offset was committed before its batch's effects were durable"
        )
        assert len(decided_before) < len(ours), "the crash cut the run short: the second run has orders left to decide"

        with payments(kafka, group_id, store, tmp_path / "second.log", batch=SMALL_BATCH) as second:
            await outcomes.wait_for_keys(list(placed), timeout_s=180)
            await eventually(lambda: lag_is_zero(kafka, group_id), "the group to have no lag", timeout_s=120)
            assert await second.stop() == 0, second.tail()
        seen = await read_to_the_end(kafka, outcomes, OUTCOME_TOPICS)

    assert_each_order_decided_once(seen, placed, wanted)
    assert_the_store_holds_each_effect_once(store, group_id, placed, wanted)
    decisions = second.decisions()
    recognised = set(decisions["order_already_decided"]) & ours
    assert uncovered <= recognised, f"redelivered but not recognised as decided: {sorted(uncovered - recognised)}"
    assert set(decisions["payment_decided"]) & ours == ours - decided_before, (
        "the second run decides exactly the orders the first had not"
    )


@pytest.mark.timeout(420)
async def test_a_sigkill_during_the_outbox_flush_republishes_the_unmarked_outcomes_under_their_own_ids_and_charges_once(
    kafka, group_id, tmp_path
):
    """The first run dies once the broker acknowledged some outbox rows and before they are marked: the second run's
    relay reads them back and publishes them again with the same ce_id; no order gets a second outcome or charge."""
    store = tmp_path / "payments.db"
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    wanted = orders(ORDERS_PER_RUN, "crash-outbox")
    async with TopicReader(kafka, [PaymentAuthorized, PaymentDeclined]) as outcomes:
        placed = await produce_and_read_back(kafka, [a_record(o) for o in wanted])

        await a_first_run_killed_at(kafka, group_id, store, tmp_path / "first.log", "outbox_published")

        # The window was hit: rows the store still holds as unpublished are on the broker already.
        on_the_wire = {s.headers["ce_id"] for s in await read_to_the_end(kafka, outcomes, OUTCOME_TOPICS)}
        published_unmarked = unmarked_outbox_ids(store) & on_the_wire
        assert published_unmarked, "no outbox row both on the broker and unmarked: the crash missed its window"

        with payments(kafka, group_id, store, tmp_path / "second.log", batch=SMALL_BATCH) as second:
            await outcomes.wait_for_keys(list(placed), timeout_s=180)
            await eventually(lambda: lag_is_zero(kafka, group_id), "the group to have no lag", timeout_s=120)
            assert await second.stop() == 0, second.tail()
        seen = await read_to_the_end(kafka, outcomes, OUTCOME_TOPICS)

    assert_each_order_decided_once(seen, placed, wanted)
    assert_the_store_holds_each_effect_once(store, group_id, placed, wanted)
    times_on_the_wire = Counter(s.headers["ce_id"] for s in seen if s.topic in OUTCOME_TOPICS)
    not_again = sorted(ce_id for ce_id in published_unmarked if times_on_the_wire[ce_id] < 2)
    assert not not_again, f"published before the crash, unmarked, and not published again: {not_again}"


@pytest.mark.timeout(300)
async def test_a_poison_record_in_the_middle_of_a_batch_is_dead_lettered_alone_and_the_whole_batch_is_committed(
    kafka, group_id, tmp_path
):
    """40 valid orders, a forged one (a byte of its value flipped: its signature fails), 40 valid ones, all on one
    partition before the worker starts, so its first poll brings them as one batch with the poison in the middle."""
    store = tmp_path / "payments.db"
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    wanted = orders(80, "poison")
    valid = [a_record(o) for o in wanted]
    forged = a_record(an_order(order_id=f"ord-forged-{uuid.uuid4().hex[:8]}"))
    flipped = forged.value[:5] + bytes([forged.value[5] ^ 0x01]) + forged.value[6:]
    poison = (*as_raw(forged)[:2], flipped, as_raw(forged)[3])
    records = [*[as_raw(r) for r in valid[:40]], poison, *[as_raw(r) for r in valid[40:]]]

    keys = {key.decode() for _, key, *_ in records}
    async with TopicReader(kafka, [PaymentAuthorized, PaymentDeclined], raw_topics=[ORDERS, DLQ]) as reader:
        await produce_raw(kafka, [(*record, 0) for record in records])  # one partition: one batch, in this order
        await reader.wait_for(lambda seen: sum(s.topic == ORDERS and s.key in keys for s in seen) >= len(records))
        on_orders = sorted((s for s in reader.seen if s.topic == ORDERS and s.key in keys), key=lambda s: s.offset)
        assert [s.partition for s in on_orders] == [0] * 81, "all 81 on one partition"
        poison_seen, last = on_orders[40], on_orders[-1]
        assert (poison_seen.key, poison_seen.value) == (forged.key, flipped), "the poison is in the middle"
        placed = {s.key: s for s in on_orders if s is not poison_seen}

        with payments(kafka, group_id, store, tmp_path / "payments.log", batch=500) as worker:
            await reader.wait_for_keys([o.order_id for o in wanted], timeout_s=120)

            def dead_lettered(seen: list[Seen]) -> bool:
                return any(s.topic == DLQ and s.headers.get("dlq-group") == group_id for s in seen)

            await reader.wait_for(dead_lettered, timeout_s=60)
            await eventually(lambda: lag_is_zero(kafka, group_id), "the group to have no lag", timeout_s=60)
            assert await worker.stop() == 0, worker.tail()
        seen = await read_to_the_end(kafka, reader, [*OUTCOME_TOPICS, DLQ])

    assert_each_order_decided_once(seen, placed, wanted)
    [dead] = [s for s in seen if s.topic == DLQ and s.headers.get("dlq-group") == group_id]
    assert (dead.key, dead.value) == (forged.key, flipped), "the poison itself is dead-lettered, as it came"
    assert dead.headers["dlq-reason"] == "bad_signature"
    assert (dead.headers["dlq-original-topic"], dead.headers["dlq-original-partition"]) == (ORDERS, "0")
    assert dead.headers["dlq-original-offset"] == str(poison_seen.offset)
    assert not [s for s in seen if s.topic in OUTCOME_TOPICS and s.key == forged.key], "the poison has no outcome"

    ours = {s.headers["ce_id"] for s in placed.values()}
    assert forged.envelope.id not in ours
    assert claims(store, group_id) & (ours | {forged.envelope.id}) == ours, "80 claims, and none for the poison"
    assert_the_store_holds_each_effect_once(store, group_id, placed, wanted)
    assert forged.key not in ledger_rows_per_order(store)
    committed = await committed_offsets(kafka, group_id, [TopicPartition(ORDERS, 0)])
    assert committed[TopicPartition(ORDERS, 0)] > last.offset, "committed past the batch's last record"
    decisions = worker.decisions()
    handled = Counter({event_id: n for event_id, n in decisions["payment_decided"].items() if event_id in ours})
    assert handled == Counter(dict.fromkeys(ours, 1)), "each valid order decided once"
    assert not set(decisions["order_already_decided"]) & ours, "nothing was redelivered"


@pytest.mark.timeout(300)
async def test_a_poison_record_arriving_while_the_store_is_down_is_dead_lettered_as_invalid_payload_from_its_own_topic(
    kafka, group_id, postgres_url, tmp_path
):
    """Payments keeps its store on PostgreSQL, through a TCP proxy. Once the store is open the proxy is cut (nothing
    listens on the store's port, the pool's connections drop), and 10 valid orders with a poison one in the middle
    (keyed and signed correctly, its value not an order) come on one partition in one producer batch. The batch's store
    cannot open: each valid order fails with that error and goes to its first retry tier, while the poison, decoded
    before the store is needed, is dead-lettered at once as invalid_payload from orders.placed.v1 at its own offset,
    never retried. The proxy is restored, and every valid order is decided once."""
    target = urlsplit(postgres_url)
    retry_topics = REGISTRY.of(OrderPlaced).retry_topics
    first_retry = REGISTRY.of(OrderPlaced).retry_topic(1)
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    wanted = orders(10, "store-down")
    valid = {o.order_id for o in wanted}
    poison = a_record_that_is_not_a_valid_order(order_id=f"ord-poison-{uuid.uuid4().hex[:8]}")
    records = [*[as_raw(a_record(o)) for o in wanted[:5]], as_raw(poison), *[as_raw(a_record(o)) for o in wanted[5:]]]

    def ours(seen: list[Seen], topics) -> list[Seen]:
        return [s for s in seen if s.topic in topics and (s.key in valid or s.key == poison.key)]

    def each_has_failed_once(seen: list[Seen]) -> bool:
        """Every valid order is on its first retry tier, and the poison is where it cannot go unseen: dead-lettered, or
        retried (the bug this test guards against)."""
        retried = {s.key for s in ours(seen, {first_retry})}
        poison_went = {s.topic for s in ours(seen, {DLQ, *retry_topics}) if s.key == poison.key}
        return valid <= retried and bool(poison_went)

    async with (
        TcpProxy(target.hostname, target.port) as proxy,
        TopicReader(kafka, [PaymentAuthorized, PaymentDeclined], raw_topics=[ORDERS, DLQ, *retry_topics]) as reader,
    ):
        store = urlunsplit(target._replace(netloc=f"{target.username}@{proxy.host}:{proxy.port}"))
        with payments(kafka, group_id, store, tmp_path / "payments.log", batch=500) as worker:
            await eventually(
                lambda: any(line.get("event") == "store_opened" for line in worker.lines()) or NotYet(worker.tail()),
                "payments to open its store",
                timeout_s=60,
            )
            await proxy.cut()
            await produce_raw_in_one_batch(kafka, records)
            await reader.wait_for(each_has_failed_once, timeout_s=60)
            while_down = list(reader.seen)
            await proxy.restore()

            def decided(seen: list[Seen]) -> bool:
                return valid <= {s.key for s in seen if s.topic in OUTCOME_TOPICS}

            # Back from the first retry tier, or a later one if the pool's reconnection missed the first.
            await reader.wait_for(decided, timeout_s=150)
            await eventually(lambda: lag_is_zero(kafka, group_id), "the group to have no lag", timeout_s=60)
            assert await worker.stop() == 0, worker.tail()
        seen = await read_to_the_end(kafka, reader, [*OUTCOME_TOPICS, DLQ, *retry_topics])

    on_orders = sorted(ours(seen, {ORDERS}), key=lambda s: s.offset)
    assert [(s.key, s.partition) for s in on_orders] == [(key.decode(), 0) for _, key, *_ in records], "one partition"
    poison_seen = on_orders[5]
    placed = {s.key: s for s in on_orders if s is not poison_seen}
    offsets = {s.offset for s in on_orders}
    # One batch brought the 11 records, and its store could not open: one such failure before all their log lines.
    lines = worker.lines()
    logged = [n for n, line in enumerate(lines) if line.get("topic") == ORDERS and line.get("offset") in offsets]
    unavailable = [n for n, line in enumerate(lines) if line.get("event") == "batch_scope_unavailable"]
    assert unavailable and unavailable[0] < min(logged), "the batch's store could not open"
    assert [n for n in unavailable if n < max(logged)] == unavailable[:1], "the 11 records came in one batch"

    # While the store was down: the poison was dead-lettered at once with its own failure, as the record it was...
    assert not [s.topic for s in ours(seen, retry_topics) if s.key == poison.key], "the poison was never retried"
    dead_letters = [s for s in ours(seen, {DLQ}) if s.key == poison.key]
    assert len(dead_letters) == 1, f"the poison is dead-lettered exactly once: {dead_letters}"
    [dead] = dead_letters
    assert (dead.value, dead.headers["ce_id"]) == (poison.value, poison.envelope.id), "the poison itself, as it came"
    assert (dead.headers["dlq-reason"], dead.headers["dlq-group"]) == ("invalid_payload", group_id)
    assert (dead.headers["dlq-original-topic"], dead.headers["dlq-original-partition"]) == (ORDERS, "0"), (
        "dead-lettered from its own topic, not a retry topic"
    )
    assert dead.headers["dlq-original-offset"] == str(poison_seen.offset)
    assert "retry-attempt" not in dead.headers, "dead-lettered on its first attempt"
    dead_while_down = {(s.partition, s.offset) for s in while_down if s.topic == DLQ}
    assert (dead.partition, dead.offset) in dead_while_down, "dead-lettered while the store was still down"

    # ...and each valid order failed with the store's error.
    first_failures = [s for s in while_down if s.topic == first_retry and s.key in valid]
    assert sorted(s.key for s in first_failures) == sorted(valid), "each valid order went to its first retry tier once"
    assert {(s.headers["retry-error-class"], s.headers["retry-original-topic"]) for s in first_failures} == {
        ("PoolTimeout", ORDERS)
    }, "failed because the store could not give a connection"

    # Once the store was back: the poison once on the dead-letter topic, no valid order there, each decided once.
    assert [s.key for s in ours(seen, {DLQ})] == [poison.key], "no valid order is dead-lettered"
    assert_each_order_decided_once(seen, placed, wanted)
    assert not [s for s in ours(seen, OUTCOME_TOPICS) if s.key == poison.key], "the poison has no outcome"
    with psycopg.connect(postgres_url) as connection:
        charged = Counter(order_id for (order_id,) in connection.execute("SELECT order_id FROM ledger").fetchall())
    assert charged == Counter({o.order_id: 1 for o in wanted if expected_topic(o) == AUTHORIZED}), "charged once each"
