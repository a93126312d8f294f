"""The store's contract on PostgreSQL beside SQLite, plus what only real concurrency and a real broker show."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from fleet.runtime.store import OutboxRelay, Store, open_store
from tests.support import end_offsets
from tests.unit.test_store import (  # noqa: F401  the contract's test bodies, run here on both backends
    HandlerFailed,
    a_service_store,
    balance,
    handle,
    records,
    test_a_committed_transaction_wakes_the_running_relay_at_once,
    test_a_failing_send_leaves_rows_pending_and_a_later_drain_publishes_them,
    test_a_group_that_claims_an_event_twice_applies_its_effects_once,
    test_a_key_with_several_pending_records_is_published_in_their_order,
    test_a_record_the_producer_refuses_holds_back_the_records_behind_it,
    test_a_transaction_that_raises_leaves_no_claim_no_state_change_and_no_outbox_row,
    test_an_event_enters_the_outbox_only_once,
    test_groups_claim_the_same_event_independently,
    test_migrate_is_idempotent_and_keeps_the_data,
    test_outbox_rows_keep_bytes_that_are_not_text,
    test_outbox_rows_keep_their_order_and_their_raw_bytes,
    test_queries_use_question_marks_and_leave_literal_question_marks_and_percents_alone,
    test_the_relay_forgets_inbox_claims_only_after_the_inbox_retention,
    test_the_relay_prunes_published_rows_past_their_retention_and_keeps_pending_ones,
    test_the_relay_publishes_pending_rows_in_order_and_marks_them,
    test_two_relays_draining_a_backlog_publish_each_key_in_order,
    test_two_relays_on_one_store_publish_each_row_once,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path) -> Store:
    """Every test here runs once per backend: an SQLite file, and a fresh schema on the local PostgreSQL cluster."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'payments.db'}"
    async with a_service_store(url) as opened:
        yield opened


@pytest.fixture
async def postgres_store(postgres_url) -> Store:
    async with a_service_store(postgres_url) as opened:
        yield opened


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


# ---- The relay on a real broker --------------------------------------------------------------------------------

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


async def test_two_replicas_relaying_one_postgres_database_publish_each_row_once_and_each_key_in_order(postgres_store, kafka, outbox_topic):
    emitted = on_topic(outbox_topic, 60, keys=6)
    async with await open_store(postgres_store.url) as other_replica:
        relays = [OutboxRelay(replica, kafka, f"test-outbox-replica-{n}", poll_interval_s=0.05, batch_size=8)
                  for n, replica in enumerate((postgres_store, other_replica))]
        await publish_while_relaying(postgres_store, relays, emitted)

    assert_each_once_and_in_order_per_key(await read_topic(kafka, outbox_topic), emitted)


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
        async with asyncio.timeout(30):
            while await store.backlog():
                await asyncio.sleep(0.05)
    finally:
        for relay in relays:
            await relay.stop()


def assert_each_once_and_in_order_per_key(on_wire, emitted) -> None:
    assert sorted(ce_ids(on_wire)) == sorted(r.envelope.id for r in emitted)  # all of them, none twice
    for key in {r.key for r in emitted}:
        published = ce_ids(r for r in on_wire if r.key == key.encode())
        assert published == [r.envelope.id for r in emitted if r.key == key]
