"""The store's contract, one suite on both backends: every test that takes `store` or `store_url` runs on SQLite (a file
in a temporary folder) and on PostgreSQL (a throwaway schema of the local cluster), so a new test runs on both without
a word; a test that holds for one backend only says which in its name. Claims, all-or-nothing transactions, the outbox,
and its relay on a fake producer, under real concurrency and on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import uuid
from dataclasses import dataclass, field, replace
from typing import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import OutOfOrderSequenceNumber

from contracts import Record
from fleet.runtime.store import DuplicateOutboxEvent, OutboxRelay, Store, open_store
from tests.support import a_record, an_order, end_offsets, eventually

pytestmark = pytest.mark.integration

BACKENDS = ("sqlite", "postgresql")

# A service's own state, in the portable SQL both dialects run.
BALANCES = ["CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, cents BIGINT NOT NULL)"]
CREDIT = (
    "INSERT INTO balances (account, cents) VALUES (?, ?) "
    "ON CONFLICT (account) DO UPDATE SET cents = balances.cents + excluded.cents"
)


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    """A fresh store's URL, once per backend: an SQLite file, and a schema of this test's own on the local PostgreSQL
    cluster (which never skips: the run fails if the cluster cannot start)."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'payments.db'}"


@pytest.fixture
async def store(store_url) -> Store:
    async with a_service_store(store_url) as opened:
        yield opened


@pytest.fixture
async def postgres_store(postgres_url) -> Store:
    async with a_service_store(postgres_url) as opened:
        yield opened


@contextlib.asynccontextmanager
async def a_service_store(url: str) -> AsyncIterator[Store]:
    """A store with the service's own tables, closed afterwards."""
    async with await open_store(url) as opened:
        await opened.migrate(BALANCES)
        yield opened


class HandlerFailed(RuntimeError):
    """What a handler raises halfway through its transaction."""


async def handle(store: Store, event_id: str, *, group: str = "payments", cents: int = 100, emits: tuple[Record, ...] = (),
                 fail: bool = False, claimed: asyncio.Event | None = None, hold_s: float = 0.0) -> bool:
    """What a service shell does with one event: claim it, change its state, queue what it emits; all or nothing.

    For races: `claimed` is set once the claim is made, and the transaction stays open `hold_s` longer.
    """
    async with store.transaction() as tx:
        won = await tx.claim(group, event_id)
        if claimed:
            claimed.set()
        if not won:
            return False
        await tx.execute(CREDIT, ("acc-1", cents))
        for record in emits:
            await tx.add_to_outbox(record)
        await asyncio.sleep(hold_s)
        if fail:
            raise HandlerFailed("the handler failed after its effects")
    return True


async def balance(store: Store, account: str = "acc-1") -> int:
    async with store.transaction() as tx:
        row = await tx.fetchone("SELECT cents FROM balances WHERE account = ?", (account,))
    return row[0] if row else 0


async def inbox_rows(store: Store) -> list[tuple]:
    async with store.transaction() as tx:
        return await tx.fetchall("SELECT group_id, event_id FROM inbox ORDER BY group_id, event_id")


async def nothing_pending(store: Store) -> bool:
    return await store.backlog() == 0


def records(count: int, *, key: str | None = None) -> list[Record]:
    """Signed records of distinct orders (or of one order, when `key` is given)."""
    return [a_record(an_order(order_id=key)) for _ in range(count)]


def wire(record: Record) -> tuple:
    """A record as the producer receives it: topic, key bytes, value bytes, raw headers."""
    return record.topic, record.key.encode(), record.value, record.raw_headers()


@dataclass
class FakeProducer:
    """aiokafka's producer as the relay uses it: `send` returns the broker's acknowledgement to await.

    `sent` is the order records reach the broker; two fakes may share it, like two relays' producers on one topic.
    """

    sent: list[tuple] = field(default_factory=list)
    broken: bool = False  # the broker refuses every record
    jitter_s: float = 0.0  # each acknowledgement takes up to this long, so concurrent relays race
    refused: set[str] = field(default_factory=set)  # ce_ids that `send` itself refuses (a full buffer, say)
    started: bool = False
    stopped_for_good: bool = False  # its sender died on an error it does not retry: every send fails the same way
    _previous: asyncio.Future | None = None

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def send(self, topic, value, key, headers):
        if self.stopped_for_good:
            raise OutOfOrderSequenceNumber("the broker lost this producer's sequence")
        if dict(headers)["ce_id"].decode() in self.refused:
            raise BufferError("the producer's buffer is full")
        # One producer's records reach the broker in the order sent, as with Kafka; two producers race.
        self._previous = asyncio.ensure_future(self._acknowledge((topic, key, value, list(headers)), self._previous))
        return self._previous

    async def _acknowledge(self, record: tuple, previous: asyncio.Future | None) -> None:
        await asyncio.sleep(random.uniform(0, self.jitter_s))
        if previous is not None:
            await asyncio.wait([previous])
        if self.broken:
            raise ConnectionError("the broker is unreachable")
        self.sent.append(record)


def a_relay(store: Store, producer: FakeProducer, **options) -> OutboxRelay:
    return OutboxRelay(store, "unused:9092", "payments-relay", producer=producer, **options)


# ---- Claims ----------------------------------------------------------------------------------------------------

async def test_a_group_that_claims_an_event_twice_applies_its_effects_once(store):
    assert await handle(store, "evt-1") is True
    assert await handle(store, "evt-1") is False
    assert await balance(store) == 100


async def test_groups_claim_the_same_event_independently(store):
    assert await handle(store, "evt-1", group="payments") is True
    assert await handle(store, "evt-1", group="ledger") is True
    assert await inbox_rows(store) == [("ledger", "evt-1"), ("payments", "evt-1")]


async def test_a_transaction_that_raises_leaves_no_claim_no_state_change_and_no_outbox_row(store):
    with pytest.raises(HandlerFailed):
        await handle(store, "evt-1", emits=tuple(records(1)), fail=True)

    assert await inbox_rows(store) == []
    assert await balance(store) == 0
    assert await store.backlog() == 0
    assert await handle(store, "evt-1") is True  # the redelivered event is handled afresh


# ---- Batches: one transaction for many records, a savepoint per handler ------------------------------------------

async def test_a_batch_commits_every_handlers_claims_state_and_outbox_rows_at_once(store):
    told: list[list] = []
    store.on_committed_rows(told.append)

    async with store.batch():
        for n in range(3):
            assert await handle(store, f"evt-{n}", emits=tuple(records(1))) is True
        assert told == []  # the relay hears nothing before the batch commits

    assert await balance(store) == 300
    assert [event for _, event in await inbox_rows(store)] == ["evt-0", "evt-1", "evt-2"]
    assert await store.backlog() == 3
    # Told once for the batch: with its rows in hand (SQLite), or woken to read them back under row locks (PostgreSQL).
    assert [len(rows) for rows in told] == [3 if store.hands_over else 0]


async def test_a_handler_that_raises_in_a_batch_undoes_only_its_own_claim_state_and_outbox_rows(store):
    handed: list[str] = []
    store.on_committed_rows(lambda rows: handed.extend(row.ce_id for row in rows))
    store.hands_over = True  # the rows as the batch committed them, on both backends
    kept, undone, after = records(1), records(1), records(1)

    async with store.batch():
        await handle(store, "evt-1", emits=tuple(kept))
        with pytest.raises(HandlerFailed):
            await handle(store, "evt-2", emits=tuple(undone), fail=True)
        await handle(store, "evt-3", emits=tuple(after))

    assert await balance(store) == 200
    assert [event for _, event in await inbox_rows(store)] == ["evt-1", "evt-3"]
    assert handed == [kept[0].envelope.id, after[0].envelope.id]
    assert await handle(store, "evt-2") is True  # the failed event is handled afresh when it comes back


async def test_a_batch_that_raises_commits_nothing_and_runs_no_callback(store):
    ran: list[str] = []

    with pytest.raises(HandlerFailed):
        async with store.batch() as batch:
            await handle(store, "evt-1", emits=tuple(records(1)))
            batch.after_commit(lambda: ran.append("flushed"))
            raise HandlerFailed("the batch failed before its commit")

    assert ran == [] and await inbox_rows(store) == [] and await store.backlog() == 0


async def test_a_batch_runs_a_callback_added_by_each_handler_once_and_only_after_its_commit(store):
    ran: list[str] = []

    def flush() -> None:
        ran.append("flushed")

    async with store.batch():
        for n in range(3):
            async with store.transaction() as tx:
                await tx.claim("payments", f"evt-{n}")
                tx.after_commit(flush)
        assert ran == []

    assert ran == ["flushed"]


async def test_a_callback_of_a_handler_that_raised_in_a_batch_never_runs(store):
    ran: list[str] = []

    async with store.batch():
        with pytest.raises(HandlerFailed):
            async with store.transaction() as tx:
                tx.after_commit(lambda: ran.append("undone"))
                raise HandlerFailed("after its callback")
        async with store.transaction() as tx:
            tx.after_commit(lambda: ran.append("kept"))

    assert ran == ["kept"]


async def test_one_event_claimed_twice_in_one_batch_has_its_effects_once(store):
    async with store.batch():
        assert await handle(store, "evt-1") is True
        assert await handle(store, "evt-1") is False

    assert await balance(store) == 100


# ---- Concurrent claims (`handle` holds its transaction open for `hold_s`, so a competitor meets its claim) --------

async def test_two_transactions_claiming_the_same_event_at_once_have_exactly_one_effect(store):
    claimed = asyncio.Event()

    async def second() -> bool:
        await claimed.wait()  # the first holds its uncommitted claim now
        return await handle(store, "evt-1")

    results = await asyncio.gather(handle(store, "evt-1", claimed=claimed, hold_s=0.3), second())

    assert results == [True, False]
    assert await balance(store) == 100


async def test_a_claim_whose_transaction_rolls_back_goes_to_the_handler_waiting_for_it(store):
    claimed = asyncio.Event()

    async def second() -> bool:
        await claimed.wait()
        return await handle(store, "evt-1")

    first = handle(store, "evt-1", claimed=claimed, hold_s=0.3, fail=True)
    results = await asyncio.gather(first, second(), return_exceptions=True)

    assert isinstance(results[0], HandlerFailed) and results[1] is True
    assert await balance(store) == 100


async def test_many_handlers_racing_over_a_few_events_apply_each_event_once(store):
    events = [f"evt-{n}" for n in range(5)]
    results = await asyncio.gather(*(handle(store, event, hold_s=0.01) for event in events * 6))

    assert sum(results) == len(events)
    assert await balance(store) == 100 * len(events)


# ---- Queries and migrations ------------------------------------------------------------------------------------

async def test_queries_use_question_marks_and_leave_literal_question_marks_and_percents_alone(store):
    async with store.transaction() as tx:
        assert await tx.fetchone("SELECT ?, 'why?', '100%'", ("x",)) == ("x", "why?", "100%")


async def test_migrate_is_idempotent_and_keeps_the_data(store):
    await handle(store, "evt-1")
    await store.migrate(BALANCES)
    async with await open_store(store.url) as reopened:
        await reopened.migrate(BALANCES)
        assert await balance(reopened) == 100


# ---- Outbox ----------------------------------------------------------------------------------------------------

async def test_outbox_rows_keep_their_order_and_their_raw_bytes(store):
    first, second, third = records(3)
    await handle(store, "evt-1", emits=(first, second))
    await handle(store, "evt-2", emits=(third,))

    async with store.pending(10) as batch:
        stored = [(row.ce_id, row.topic, row.key.encode(), row.value, row.headers) for row in batch.rows]
    assert stored == [(r.envelope.id, *wire(r)) for r in (first, second, third)]


async def test_outbox_rows_keep_bytes_that_are_not_text(store):
    record = replace(records(1)[0], value=b"\x00\xff\xfe binary \x80")
    await handle(store, "evt-1", emits=(record,))
    async with store.pending(10) as batch:
        assert batch.rows[0].value == record.value


async def test_an_event_enters_the_outbox_only_once(store):
    record = records(1)[0]
    with pytest.raises(DuplicateOutboxEvent, match=record.envelope.id):
        await handle(store, "evt-1", emits=(record, record))
    assert await store.backlog() == 0


# ---- Relay (a fake producer) -----------------------------------------------------------------------------------

async def test_the_relay_publishes_pending_rows_in_order_and_marks_them(store):
    emitted = records(3)
    await handle(store, "evt-1", emits=tuple(emitted[:2]))
    await handle(store, "evt-2", emits=tuple(emitted[2:]))
    producer = FakeProducer()
    relay = a_relay(store, producer)

    assert await relay.drain() == 3
    assert producer.sent == [wire(r) for r in emitted]
    assert await relay.backlog() == 0
    assert await relay.drain() == 0  # nothing is published twice
    assert len(producer.sent) == 3
    await relay.stop()


async def test_a_failing_send_leaves_rows_pending_and_a_later_drain_publishes_them(store):
    emitted = records(3)
    await handle(store, "evt-1", emits=tuple(emitted))
    producer = FakeProducer(broken=True)
    relay = a_relay(store, producer)

    assert await relay.drain() == 0
    assert await relay.backlog() == 3

    producer.broken = False
    assert await relay.drain() == 3
    assert producer.sent == [wire(r) for r in emitted]
    assert await relay.backlog() == 0
    await relay.stop()


async def test_a_relay_whose_producer_stopped_for_good_closes_it_and_publishes_with_a_new_one(store):
    emitted = records(3)
    await handle(store, "evt-1", emits=tuple(emitted))
    wedged, fresh = FakeProducer(stopped_for_good=True), FakeProducer()
    built = iter([wedged, fresh])
    relay = OutboxRelay(store, "unused:9092", "payments-relay", make_producer=lambda: next(built))

    assert await relay.drain() == 0
    assert await relay.drain() == 3
    assert not wedged.started and fresh.sent == [wire(r) for r in emitted]
    await relay.stop()
    assert not fresh.started


async def test_a_relay_keeps_a_producer_that_only_failed_to_reach_the_broker(store):
    await handle(store, "evt-1", emits=tuple(records(2)))
    producer = FakeProducer(broken=True)  # a retriable failure: the same producer tries again
    built = iter([producer])
    relay = OutboxRelay(store, "unused:9092", "payments-relay", make_producer=lambda: next(built))

    assert await relay.drain() == 0
    producer.broken = False
    assert await relay.drain() == 2
    await relay.stop()


async def test_a_record_the_producer_refuses_holds_back_the_records_behind_it(store):
    emitted = records(3)
    await handle(store, "evt-1", emits=tuple(emitted))
    producer = FakeProducer(refused={emitted[1].envelope.id})
    relay = a_relay(store, producer)

    assert await relay.drain() == 1
    producer.refused.clear()
    assert await relay.drain() == 2
    assert producer.sent == [wire(r) for r in emitted]
    await relay.stop()


async def test_a_key_with_several_pending_records_is_published_in_their_order(store):
    emitted = records(4, key="ord-same-key")
    for number, record in enumerate(emitted):
        await handle(store, f"evt-{number}", emits=(record,))
    producer = FakeProducer()
    relay = a_relay(store, producer, batch_size=2)

    assert await relay.drain() == 4
    assert producer.sent == [wire(r) for r in emitted]
    await relay.stop()


async def test_a_committed_transaction_wakes_the_running_relay_at_once(store):
    producer = FakeProducer()
    relay = a_relay(store, producer, poll_interval_s=60.0)  # only the wake-up can be in time
    await relay.start()
    try:
        record = records(1)[0]
        await handle(store, "evt-1", emits=(record,))
        await eventually(lambda: producer.sent, "the woken relay to publish", timeout_s=5, every_s=0.01)
        assert producer.sent == [wire(record)]
    finally:
        await relay.stop()
    assert not producer.started


async def test_two_relays_on_one_store_publish_each_row_once(store):
    sent: list[tuple] = []
    relays = [a_relay(store, FakeProducer(sent, jitter_s=0.004), poll_interval_s=0.01, batch_size=7) for _ in range(2)]
    for relay in relays:
        await relay.start()
    emitted = records(40)
    for number, record in enumerate(emitted):
        await handle(store, f"evt-{number}", emits=(record,))
    await eventually(lambda: len(sent) >= len(emitted), "the relays to publish every row", timeout_s=10, every_s=0.01)
    for relay in relays:
        await relay.stop()

    assert sorted(record[2] for record in sent) == sorted(r.value for r in emitted)
    assert await store.backlog() == 0


async def test_two_relays_draining_a_backlog_publish_each_key_in_order(store):
    emitted = [replace(record, key=f"ord-key-{number % 3}") for number, record in enumerate(records(30))]
    await handle(store, "evt-1", emits=tuple(emitted))
    sent: list[tuple] = []
    relays = [a_relay(store, FakeProducer(sent, jitter_s=0.004), batch_size=4) for _ in range(2)]

    while await store.backlog():
        await asyncio.gather(*(relay.drain() for relay in relays))
    for relay in relays:
        await relay.stop()

    assert len(sent) == len(emitted)
    for key in {r.key for r in emitted}:
        assert [w for w in sent if w[1] == key.encode()] == [wire(r) for r in emitted if r.key == key]


async def test_the_relay_forgets_inbox_claims_only_after_the_inbox_retention(store):
    await handle(store, "evt-old")
    await a_relay(store, FakeProducer(), inbox_retention_s=3600).prune()
    async with store.transaction() as tx:
        assert not await tx.claim("payments", "evt-old"), "a fresh claim is kept"
    await a_relay(store, FakeProducer(), inbox_retention_s=0).prune()
    async with store.transaction() as tx:
        assert await tx.claim("payments", "evt-old"), "a claim past the retention is gone"


async def test_the_relay_prunes_published_rows_past_their_retention_and_keeps_pending_ones(store):
    await handle(store, "evt-1", emits=tuple(records(2)))
    relay = a_relay(store, FakeProducer(), retention_s=0)
    await relay.drain()
    await handle(store, "evt-2", emits=tuple(records(1)))

    assert await relay.prune() == 2
    assert await relay.backlog() == 1
    await relay.stop()


# ---- The relay on the real broker ------------------------------------------------------------------------------

@pytest.fixture
async def outbox_topic(kafka) -> str:
    """A throwaway topic of this test's own (3 partitions), deleted afterwards."""
    name = f"eventfleet-test-outbox-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str) -> list:
    """Every record on the topic now, in order per partition: nothing is published after the relays stop."""
    ends = await end_offsets(bootstrap, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        seen = []
        async with asyncio.timeout(30):
            while len(seen) < sum(ends.values()):
                for batch in (await consumer.getmany(timeout_ms=250)).values():
                    seen.extend(batch)
        return seen
    finally:
        await consumer.stop()


def on_topic(topic: str, count: int, *, keys: int | None = None):
    """Signed records moved onto the test topic (their bytes matter here, not their signature's topic)."""
    made = [replace(record, topic=topic) for record in records(count)]
    if keys:  # a few keys, each with several records in a row
        made = [replace(record, key=f"ord-key-{number % keys}") for number, record in enumerate(made)]
    return made


def ce_ids(records_on_wire) -> list[str]:
    return [dict(r.headers)["ce_id"].decode() for r in records_on_wire]


async def publish_while_relaying(store: Store, relays: list[OutboxRelay], emitted) -> None:
    """Commits half the records as a backlog (as after an outage), starts the relays, commits the rest two to a
    transaction while they run, then waits until none is pending."""
    half = len(emitted) // 2
    await handle(store, "evt-backlog", emits=tuple(emitted[:half]))
    for relay in relays:
        await relay.start()
    try:
        for number in range(half, len(emitted), 2):
            await handle(store, f"evt-{number}", emits=tuple(emitted[number:number + 2]))
        await eventually(lambda: nothing_pending(store), "the relays to publish every row", timeout_s=30, every_s=0.05)
    finally:
        for relay in relays:
            await relay.stop()


def assert_each_once_and_in_order_per_key(on_wire, emitted) -> None:
    assert sorted(ce_ids(on_wire)) == sorted(r.envelope.id for r in emitted)  # all of them, none twice
    for key in {r.key for r in emitted}:
        published = ce_ids(r for r in on_wire if r.key == key.encode())
        assert published == [r.envelope.id for r in emitted if r.key == key]


async def test_the_relay_publishes_records_that_keep_their_ce_id_and_headers_byte_for_byte(store, kafka, outbox_topic):
    emitted = on_topic(outbox_topic, 3)
    await handle(store, "evt-1", emits=tuple(emitted))

    async with OutboxRelay(store, kafka, "test-outbox-relay") as relay:
        assert await relay.drain() == 3

    on_wire = sorted(await read_topic(kafka, outbox_topic), key=lambda r: ce_ids([r]))
    expected = sorted(emitted, key=lambda r: r.envelope.id)
    assert [(r.key, r.value, list(r.headers)) for r in on_wire] == [(e.key.encode(), e.value, e.raw_headers()) for e in expected]


async def test_two_relays_on_one_store_publish_each_row_once_and_each_key_in_order(store, kafka, outbox_topic):
    emitted = on_topic(outbox_topic, 60, keys=6)
    relays = [OutboxRelay(store, kafka, f"test-outbox-relay-{n}", poll_interval_s=0.05, batch_size=8) for n in range(2)]
    await publish_while_relaying(store, relays, emitted)

    assert_each_once_and_in_order_per_key(await read_topic(kafka, outbox_topic), emitted)


# ---- PostgreSQL only: several processes on one database --------------------------------------------------------

async def test_two_replicas_relaying_one_postgres_database_publish_each_row_once_and_each_key_in_order(postgres_store, kafka, outbox_topic):
    emitted = on_topic(outbox_topic, 60, keys=6)
    async with await open_store(postgres_store.url) as other_replica:
        relays = [OutboxRelay(replica, kafka, f"test-outbox-replica-{n}", poll_interval_s=0.05, batch_size=8)
                  for n, replica in enumerate((postgres_store, other_replica))]
        await publish_while_relaying(postgres_store, relays, emitted)

    assert_each_once_and_in_order_per_key(await read_topic(kafka, outbox_topic), emitted)


# ---- The suite itself ------------------------------------------------------------------------------------------

def test_every_test_here_runs_on_both_backends_unless_its_name_says_which():
    """This file's promise, kept: a test that reached a store any other way than `store` or `store_url` would run on
    one backend without a word."""
    tests = {name: test for name, test in globals().items() if name.startswith("test_") and inspect.isfunction(test)}
    strays = [name for name, test in tests.items()
              if test is not test_every_test_here_runs_on_both_backends_unless_its_name_says_which
              and not {"store", "store_url"} & set(inspect.signature(test).parameters)
              and not any(backend in name for backend in ("sqlite", "postgres"))]
    assert strays == [], "take `store` or `store_url`, or say the backend in the test's name"


async def test_a_postgresql_batch_whose_connection_breaks_raises_rather_than_leave_its_effects_uncommitted_in_silence(
    postgres_store, postgres
):
    """The database stops mid-batch: the last handler's savepoint fails and goes to its retry tier, and the batch's
    earlier effects were never committed. The batch must raise so its records come again (make chaos found the silent
    version: psycopg ends a transaction block on a broken connection without committing and without an error)."""
    import psycopg

    from fleet.runtime.store.postgres import StoreConnectionLost

    ran: list[str] = []
    with pytest.raises(StoreConnectionLost):
        async with postgres_store.batch() as batch:
            await handle(postgres_store, "evt-1", emits=tuple(records(1)))
            batch.after_commit(lambda: ran.append("flushed"))
            [backend] = await batch.fetchone("SELECT pg_backend_pid()") or (None,)
            with psycopg.connect(postgres, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (backend,))
            with pytest.raises(psycopg.OperationalError):  # the next handler fails; the runner routes it to a retry
                await handle(postgres_store, "evt-2", emits=tuple(records(1)))

    assert ran == [] and await inbox_rows(postgres_store) == [] and await postgres_store.backlog() == 0
    assert await handle(postgres_store, "evt-1") is True  # it is handled afresh when its record comes again


async def test_an_sqlite_transaction_waits_for_another_processes_write_lock_and_the_event_loop_goes_on(tmp_path):
    """A CLI or a second replica holds the file's write lock: a transaction waits for it (it does not fail), on the
    store's thread, so the worker's event loop keeps running meanwhile; it goes ahead once the lock is released."""
    import sqlite3

    async with a_service_store(f"sqlite:///{tmp_path / 'payments.db'}") as store:
        other = sqlite3.connect(tmp_path / "payments.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            waiting = asyncio.create_task(handle(store, "evt-1"))
            await asyncio.sleep(0.5)
            assert not waiting.done() and ticks >= 10
            other.execute("COMMIT")
            other.close()
            assert await asyncio.wait_for(waiting, 5) is True
            assert await handle(store, "evt-2") is True  # and the next one takes the free lock at once
        finally:
            ticker.cancel()
