"""The batch runner on a real SQLite store: one transaction and one offset commit per batch, each handler in a savepoint
of it, a failing event undone alone, emitted records acknowledged before the commit, and retries waiting outside."""

import asyncio
import contextlib
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from contracts import REGISTRY, OrderPlaced, verify_record
from fleet.runtime.delivery.batches import BatchRunner
from fleet.runtime.delivery.commits import pending_sends
from fleet.runtime.delivery.dead_letters import FailureRouter, MemorySink
from fleet.runtime.delivery.outcomes import RecordOutcomes, Subscription, WorkerState, current_envelope
from fleet.runtime.delivery.retries import RetryPolicy, failure_headers, retry_record
from fleet.runtime.errors import PermanentError
from fleet.runtime.keys import KeyStore
from fleet.runtime.stateful import StateHandle
from fleet.runtime.store import open_store
from tests.support import FakeRecord, a_record, an_order, signer_of

TOPIC = REGISTRY.of(OrderPlaced)
POISON = "ord-poison"


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict] = []
        self.seeks: list[tuple] = []

    async def commit(self, offsets):
        self.commits.append({(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()})

    def seek(self, tp, offset):
        self.seeks.append((tp.topic, tp.partition, offset))


def consumer_records(*order_ids: str, first_offset: int = 0) -> list[FakeRecord]:
    """Signed records as the consumer hands them over, one after another on partition 0."""
    records = []
    for offset, order_id in enumerate(order_ids, first_offset):
        record = a_record(an_order(order_id=order_id))
        records.append(FakeRecord(TOPIC.name, 0, offset, record.key.encode(), record.value, record.raw_headers(),
                                  timestamp=int(time.time() * 1000)))
    return records


def retries(*order_ids: str, group: str, due_ms: int, first_offset: int = 0) -> list[FakeRecord]:
    """Records on retry tier 1, as `group`'s consumer moved them there (re-signed by it), due at `due_ms`."""
    records = []
    for original in consumer_records(*order_ids, first_offset=first_offset):
        envelope = verify_record(original.topic, original.key, original.value, original.headers, original.timestamp,
                                 KeyStore.for_signer(Path(os.environ["FLEET_KEYS_DIR"]), group).keyring())
        failure = failure_headers((), attempt=1, group=group, error=RuntimeError("down"),
                                  origin=(original.topic, 0, original.offset), now=datetime.now(UTC))
        retry, extra = retry_record(TOPIC, 1, original.key.decode(), original.value, envelope, original.headers,
                                    failure, due_ms, signer_of(group), datetime.now(UTC))
        records.append(FakeRecord(retry.topic, 0, original.offset, original.key, original.value,
                                  retry.raw_headers() + extra, timestamp=int(time.time() * 1000)))
    return records


class Worker:
    """A worker's delivery engine around one store and a handler that writes each order it sees."""

    def __init__(self, store, *, tier: int = 0, emit=None) -> None:
        keys_dir = Path(os.environ["FLEET_KEYS_DIR"])
        self.state = WorkerState("payments")
        self.stops: list[str] = []
        self.state.stop_worker = lambda: self.stops.append("stop")
        self.failures = FailureRouter("127.0.0.1:1", "payments")
        self.failures.sink = self.dead = MemorySink()
        self.store = store
        self.handle = StateHandle()
        self.handle._store = store
        self.consumer = FakeConsumer()
        self.handled_at: dict[str, float] = {}
        self.emit = emit
        policy = RetryPolicy("payments", (0.0, 0.0, 0.0), tier=tier)
        outcomes = RecordOutcomes(KeyStore.for_signer(keys_dir, "payments"), self.failures, self.state)
        subscription = Subscription(policy, SimpleNamespace(consumer=self.consumer))
        topics = {TOPIC.name: TOPIC, **{name: TOPIC for name in TOPIC.retry_topics}}
        self.runner = BatchRunner(self.on_order, topics, outcomes, subscription, scopes=[self.handle.batch])

    async def on_order(self, order: OrderPlaced) -> None:
        self.handled_at[order.order_id] = time.monotonic()
        async with self.store.transaction() as tx:
            if not await tx.claim("payments", current_envelope().id):
                return
            await tx.execute("INSERT INTO seen (order_id) VALUES (?)", (order.order_id,))
            if order.order_id == POISON:
                raise PermanentError("this order cannot be decided")
        if self.emit is not None:
            pending_sends.get().append(self.emit())

    async def seen(self) -> list[str]:
        async with self.store.transaction() as tx:
            return [row[0] for row in await tx.fetchall("SELECT order_id FROM seen ORDER BY rowid")]

    async def claims(self) -> int:
        async with self.store.transaction() as tx:
            return (await tx.fetchone("SELECT COUNT(*) FROM inbox"))[0]


@pytest.fixture
async def store(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path / 'payments.db'}")
    await store.migrate(["CREATE TABLE IF NOT EXISTS seen (order_id TEXT NOT NULL)"])
    yield store
    await store.close()


def counting_transactions(store) -> list[str]:
    """The BEGINs and COMMITs the store sends to SQLite, in order (sqlite3's trace callback sees every statement, on the
    event loop and on the store's thread alike)."""
    sent: list[str] = []

    def seen(sql: str) -> None:
        if sql.split()[0] in ("BEGIN", "COMMIT"):
            sent.append(sql.split()[0])

    store._connection.set_trace_callback(seen)
    return sent


async def test_a_failing_event_is_undone_alone_and_the_rest_of_its_batch_commits_once(store):
    worker = Worker(store)
    transactions = counting_transactions(store)
    await worker.runner(consumer_records("ord-1", "ord-2", POISON, "ord-3", "ord-4"))
    assert transactions == ["BEGIN", "COMMIT"], "one transaction for the whole batch"
    assert await worker.seen() == ["ord-1", "ord-2", "ord-3", "ord-4"]
    assert await worker.claims() == 4, "the failed event's claim was undone with its savepoint"
    assert [(topic, headers["dlq-reason"]) for topic, _, _, headers in worker.dead.sent] == [
        (TOPIC.dead_letter_topic, "permanent_error")
    ]
    assert worker.consumer.commits == [{(TOPIC.name, 0): 5}], "one offset commit, past the whole batch"


async def test_a_redelivered_batch_has_no_second_effect(store):
    worker = Worker(store)
    batch = consumer_records("ord-1", "ord-2")
    await worker.runner(batch)
    await worker.runner(batch)
    assert await worker.seen() == ["ord-1", "ord-2"] and await worker.claims() == 2


async def test_an_emitted_record_the_broker_refused_sends_the_whole_batch_back_uncommitted(store):
    def refused() -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(ConnectionError("broker gone"))
        return future

    worker = Worker(store, emit=refused)
    with pytest.raises(ConnectionError):
        await worker.runner(consumer_records("ord-1", "ord-2"))
    assert worker.consumer.commits == []
    assert worker.consumer.seeks == [(TOPIC.name, 0, 0)], "back to the batch's first record"


async def test_a_record_refused_by_verification_is_dead_lettered_and_its_neighbours_handled(store):
    worker = Worker(store)
    good, bad, also_good = consumer_records("ord-1", "ord-2", "ord-3")
    forged = FakeRecord(bad.topic, bad.partition, bad.offset, bad.key, bad.value + b" ", bad.headers, bad.timestamp)
    await worker.runner([good, forged, also_good])
    assert await worker.seen() == ["ord-1", "ord-3"]
    assert [headers["dlq-reason"] for _, _, _, headers in worker.dead.sent] == ["bad_signature"]
    assert worker.consumer.commits == [{(TOPIC.name, 0): 3}]


async def test_callbacks_after_commit_run_once_the_batch_commits_and_never_for_an_undone_event(store):
    worker = Worker(store)
    ran: list[str] = []
    on_order = worker.on_order

    async def with_a_callback(order: OrderPlaced) -> None:
        async with store.transaction() as tx:
            tx.after_commit(lambda: ran.append(order.order_id))
            tx.after_commit(ran.copy)  # an equal callback runs once, where it was last added
        await on_order(order)

    worker.runner.handler = with_a_callback
    await worker.runner(consumer_records("ord-1", POISON, "ord-2"))
    assert ran == ["ord-1", POISON, "ord-2"], "each added in its own committed savepoint"

    undone: list[str] = []

    async def undone_callback(order: OrderPlaced) -> None:
        async with store.transaction() as tx:
            tx.after_commit(lambda: undone.append(order.order_id))
            raise PermanentError("undone")

    worker.runner.handler = undone_callback
    await worker.runner(consumer_records("ord-9"))
    assert undone == []


async def test_a_retry_tiers_records_wait_for_their_due_time_without_holding_the_store(store):
    worker = Worker(store, tier=1)
    now_ms = int(time.time() * 1000)
    first = retries("ord-1", group="payments", due_ms=now_ms - 1)
    later = retries("ord-2", group="payments", due_ms=now_ms + 400, first_offset=1)
    started = time.monotonic()
    run = asyncio.create_task(worker.runner(first + later))
    await asyncio.sleep(0.15)
    # While ord-2 waits for its due time, the store is free: another transaction goes through at once.
    async with asyncio.timeout(0.1):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO seen (order_id) VALUES ('meanwhile')")
    await run
    assert worker.handled_at["ord-2"] - started >= 0.35
    assert await worker.seen() == ["ord-1", "meanwhile", "ord-2"]
    assert worker.consumer.commits == [{(TOPIC.retry_topic(1), 0): 1}, {(TOPIC.retry_topic(1), 0): 2}]


async def test_another_groups_retry_is_skipped_and_committed_past(store):
    worker = Worker(store, tier=1)
    theirs = retries("ord-1", group="inventory", due_ms=0)
    await worker.runner(theirs)
    assert await worker.seen() == [] and worker.consumer.commits == [{(TOPIC.retry_topic(1), 0): 1}]


def test_a_crash_is_asked_for_at_one_point_of_a_batch_once_enough_records_were_handled(monkeypatch):
    from fleet.runtime import faults as faults_module
    from fleet.runtime.faults import Faults, FaultSettings

    kills = []
    monkeypatch.setattr(faults_module.os, "kill", lambda pid, sig: kills.append(sig))
    faults = Faults(FaultSettings(crash_at="batch_committed", crash_after=3))
    faults.handled = 2
    faults.crash_point("batch_committed")
    faults.handled = 3
    faults.crash_point("outbox_published")
    assert kills == [], "not before 3 records, nor at another point"
    faults.crash_point("batch_committed")
    assert kills == [faults_module.signal.SIGKILL]
    assert not Faults().crashes and faults.crashes


async def test_while_a_batch_is_handled_its_records_not_yet_handled_still_count_as_lag(store):
    worker = Worker(store)
    seen: list[int] = []
    on_order = worker.on_order

    async def noting_where_the_batch_is(order: OrderPlaced) -> None:
        seen.append(worker.runner.subscription.unhandled[(TOPIC.name, 0)])
        await on_order(order)

    worker.runner.handler = noting_where_the_batch_is
    await worker.runner(consumer_records("ord-1", "ord-2", "ord-3"))
    assert seen == [0, 1, 2], "each handler sees itself as the first record not yet handled"
    assert worker.runner.subscription.unhandled == {}, "once committed, the consumer's position says it all"


@contextlib.asynccontextmanager
async def database_down():
    """A batch scope that cannot open: its database is down."""
    raise ConnectionError("connection refused: the database is down")
    yield  # never reached


async def test_when_the_store_cannot_open_each_record_of_the_batch_goes_to_its_retry_tier(store):
    worker = Worker(store)

    worker.runner.scopes = [database_down]
    await worker.runner(consumer_records("ord-1", "ord-2"))
    moved = [(topic, headers["retry-reason"]) for topic, _, _, headers in worker.dead.sent]
    assert moved == [(TOPIC.retry_topic(1), "connection refused: the database is down")] * 2
    assert await worker.seen() == [], "no handler ran its effects"
    assert worker.consumer.commits == [{(TOPIC.name, 0): 2}], "their outcome (a retry) is durable: committed past"


async def test_a_handler_over_its_time_limit_is_cancelled_and_retried_and_the_next_ones_keep_their_own_limit(store):
    from dataclasses import replace

    worker = Worker(store)
    worker.runner.policy = replace(worker.runner.policy, handler_timeout_s=0.05)
    finished: list[str] = []

    async def sometimes_slow(order: OrderPlaced) -> None:
        # Each handler alone stays under the limit but for the slow one; together they run well over it.
        await asyncio.sleep(1.0 if order.order_id == "ord-slow" else 0.03)
        finished.append(order.order_id)

    worker.runner.handler = sometimes_slow
    await worker.runner(consumer_records("ord-1", "ord-2", "ord-slow", "ord-3", "ord-4"))
    assert finished == ["ord-1", "ord-2", "ord-3", "ord-4"], "only the slow one was cancelled"
    assert [(topic, headers["retry-error-class"]) for topic, _, _, headers in worker.dead.sent] == [
        (TOPIC.retry_topic(1), "TimeoutError")
    ]
    assert worker.consumer.commits == [{(TOPIC.name, 0): 5}]
    assert asyncio.current_task().cancelling() == 0, "the limit's cancellation was taken back"


def schema_invalid(order_id: str, *, offset: int) -> FakeRecord:
    """A correctly signed record whose value is not a valid OrderPlaced (its signature covers the bad value)."""
    from contracts import Record, sign

    good = a_record(an_order(order_id=order_id))
    bad = sign(Record(good.topic, good.key, b'{"order_id": "' + order_id.encode() + b'"}', good.envelope),
               signer_of("storefront"))
    return FakeRecord(TOPIC.name, 0, offset, bad.key.encode(), bad.value, bad.raw_headers(),
                      timestamp=int(time.time() * 1000))


async def test_while_the_store_is_down_a_value_that_is_not_a_valid_event_is_dead_lettered_not_retried(store):
    worker = Worker(store)

    worker.runner.scopes = [database_down]
    good, bad = consumer_records("ord-1")[0], schema_invalid("ord-2", offset=1)
    await worker.runner([good, bad])
    sent = [(topic, headers.get("retry-reason") or headers.get("dlq-reason"))
            for topic, _, _, headers in worker.dead.sent]
    assert sent == [(TOPIC.retry_topic(1), "connection refused: the database is down"),
                    (TOPIC.dead_letter_topic, "invalid_payload")]
    assert worker.consumer.commits == [{(TOPIC.name, 0): 2}]


async def test_a_record_refused_on_a_retry_tier_is_dead_lettered_as_the_record_it_first_was(store):
    worker = Worker(store, tier=1)
    [retry] = retries("ord-1", group="payments", due_ms=0, first_offset=7)
    forged = FakeRecord(retry.topic, 0, 3, retry.key, b'{"order_id": "ord-1"}', retry.headers,
                        timestamp=retry.timestamp)
    await worker.runner([forged])
    [(topic, _, _, headers)] = worker.dead.sent
    assert topic == TOPIC.dead_letter_topic and headers["dlq-reason"] == "bad_signature"
    assert (headers["dlq-original-topic"], headers["dlq-original-partition"], headers["dlq-original-offset"]) == (
        TOPIC.name, "0", "7"), "the topic it came from, not its retry topic"
    assert headers["retry-attempt"] == "1", "and how often it failed before"


async def test_a_record_on_a_topics_own_subscriber_cannot_name_another_origin_for_its_dead_letter(store):
    worker = Worker(store)
    record = schema_invalid("ord-2", offset=4)
    forged = FakeRecord(record.topic, 0, 4, record.key, record.value,
                        [*record.headers, ("retry-original-topic", b"payments.authorized.v1"),
                         ("retry-original-offset", b"99")], timestamp=record.timestamp)
    await worker.runner([forged])
    [(_, _, _, headers)] = worker.dead.sent
    assert (headers["dlq-reason"], headers["dlq-original-topic"], headers["dlq-original-offset"]) == (
        "invalid_payload", TOPIC.name, "4")


async def test_a_value_found_invalid_on_a_retry_tier_is_dead_lettered_as_the_record_it_first_was(store):
    worker = Worker(store, tier=1)
    original = schema_invalid("ord-2", offset=7)
    envelope = verify_record(original.topic, original.key, original.value, original.headers, original.timestamp,
                             KeyStore.for_signer(Path(os.environ["FLEET_KEYS_DIR"]), "payments").keyring())
    failure = failure_headers((), attempt=1, group="payments", error=RuntimeError("database down"),
                              origin=(original.topic, 0, original.offset), now=datetime.now(UTC))
    retry, extra = retry_record(TOPIC, 1, original.key.decode(), original.value, envelope, original.headers, failure,
                                0, signer_of("payments"), datetime.now(UTC))
    await worker.runner([FakeRecord(retry.topic, 0, 3, original.key, original.value, retry.raw_headers() + extra,
                                    timestamp=int(time.time() * 1000))])
    [(topic, _, _, headers)] = worker.dead.sent
    assert (topic, headers["dlq-reason"]) == (TOPIC.dead_letter_topic, "invalid_payload")
    assert (headers["dlq-original-topic"], headers["dlq-original-offset"]) == (TOPIC.name, "7")


def verifying_threads(runner) -> list[str]:
    """The names of the threads the runner verified each record on."""
    names: list[str] = []
    verify = runner.outcomes.verify

    def verify_and_note(record):
        names.append(threading.current_thread().name)
        return verify(record)

    runner.outcomes.verify = verify_and_note
    return names


@pytest.mark.parametrize(("threads", "where"), [(0, "MainThread"), (2, "fleet-verify")])
async def test_a_large_batch_is_verified_on_the_threads_the_settings_ask_for(store, threads, where):
    worker = Worker(store)
    worker.runner.verify_threads = threads
    names = verifying_threads(worker.runner)
    orders = [f"ord-{n}" for n in range(20)]  # past PARALLEL_VERIFY_FROM
    try:
        await worker.runner(consumer_records(*orders))
    finally:
        worker.runner.close()
    assert len(names) == 20 and {name.split("_")[0] for name in names} == {where}
    assert await worker.seen() == orders


async def test_each_batch_tells_how_long_its_store_took_to_commit_and_a_batch_rolled_back_tells_nothing(store):
    worker = Worker(store)
    took: list[float] = []
    worker.handle.commit_took = took.append
    await worker.runner(consumer_records("ord-1", "ord-2", "ord-3"))
    assert len(took) == 1 and took[0] > 0, "one commit for the batch"

    async def crash(_order):
        raise asyncio.CancelledError  # the worker stops mid-batch: the transaction rolls back
    worker.runner.handler = crash
    with pytest.raises(asyncio.CancelledError):
        await worker.runner(consumer_records("ord-4", first_offset=3))
    assert len(took) == 1, "a rolled-back batch committed nothing"
