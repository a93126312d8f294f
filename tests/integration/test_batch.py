"""Batch consumption on the real broker: the same checks and outcomes per record as one at a time, what the handler
emits is signed and in key order, and nothing is committed before every outcome of the batch is durable."""

import uuid
from datetime import datetime, timezone
from collections import Counter, defaultdict

from contracts import OrderPlaced, PaymentAuthorized, PaymentDeclined, verify_record
from fleet.runtime.broker import create_broker, publisher_for, subscriber_for
from fleet.runtime.errors import TransientError
from fleet.runtime.keys import KeyStore, keyring_path
from fleet.runtime.settings import KafkaSettings
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from services.payments import core as payments_core
from tests.integration.test_signed_wire import _raw, poison_records
from tests.support import (
    BrokerOnly,
    RunningApps,
    TopicReader,
    a_record,
    an_order,
    end_offsets,
    produce_raw,
    start_group_at_end,
    wait_until_committed,
)

BATCH = 50
OUTCOMES = (PaymentAuthorized, PaymentDeclined)


def _kafka(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, batch_max_records=BATCH)


async def _committed_to_the_end(bootstrap: str, group_id: str, topic: str) -> None:
    """The group commits up to the topic's current end within a moment of the batch's last outcome; fails otherwise."""
    await wait_until_committed(bootstrap, group_id, await end_offsets(bootstrap, [topic]))


async def test_a_batch_worker_decides_every_valid_order_once_and_dead_letters_each_poison_record_with_its_reason(kafka, group_id):
    """Everything is on the topic before the worker starts, so its polls return real batches, poison among valid orders."""
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    valid = [a_record(an_order()) for _ in range(40)]
    poison = poison_records()
    mixed = [_raw(r) for r in valid[:20]] + [raw for raw, _ in poison.values()] + [_raw(r) for r in valid[20:]]
    async with TopicReader(kafka, OUTCOMES, raw_topics=["orders.placed.v1.dlq"]) as reader:
        await produce_raw(kafka, mixed)
        payments = create_payments(PaymentsSettings(group_id=group_id, kafka=_kafka(kafka)))
        async with RunningApps(payments):
            await reader.wait_for(lambda seen: sum(s.topic.endswith(".dlq") and s.headers.get("dlq-group") == group_id for s in seen) >= len(poison))
            outcomes = await reader.wait_for_keys([r.key for r in valid])
            await _committed_to_the_end(kafka, group_id, "orders.placed.v1")
    assert sorted(s.key for s in outcomes) == sorted(r.key for r in valid), "every valid record got through, once"
    dead = [s for s in reader.seen if s.topic == "orders.placed.v1.dlq" and s.headers.get("dlq-group") == group_id]
    by_value = {(raw[1], raw[2]): (name, reason) for name, (raw, reason) in poison.items()}
    assert {by_value[(s.key.encode(), s.value)][0]: s.headers["dlq-reason"] for s in dead} == {n: r for n, (_, r) in poison.items()}


def _relay(kafka: str, group_id: str, handled: Counter, fail_first: set[str] = frozenset()):
    """A stateless relay in batch mode: every order becomes an authorization, emitted (no outbox: nothing else changes)."""
    broker = create_broker("payments", _kafka(kafka))
    to_payment_authorized = publisher_for(broker, PaymentAuthorized)

    @subscriber_for(broker, OrderPlaced, group_id=group_id, retry_delays_s=(0.2, 0.5, 1.0))
    async def on_order_placed(order: OrderPlaced, envelope) -> None:
        handled[envelope.id] += 1
        if order.order_id in fail_first and handled[envelope.id] == 1:
            raise TransientError("the first attempt fails")
        decision = payments_core.decide(order, payments_core.CreditPolicy(default_limit_cents=10**9), datetime.now(timezone.utc))
        await to_payment_authorized.emit(decision, cause=envelope)

    return BrokerOnly(broker)


async def test_what_a_batch_handler_emits_is_signed_on_the_wire_in_the_order_of_its_causes_per_key(kafka, group_id, keys_dir):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    orders = [an_order(order_id=f"ord-batch-{n}-{uuid.uuid4().hex[:6]}") for n in range(8)]
    records = [a_record(order) for _ in range(5) for order in orders]  # five events per key, interleaved
    handled: Counter = Counter()
    async with TopicReader(kafka, [PaymentAuthorized]) as reader:
        await produce_raw(kafka, [_raw(r) for r in records])
        async with RunningApps(_relay(kafka, group_id, handled)):
            seen = await reader.wait_for_keys([o.order_id for o in orders], per_key=5)
            await _committed_to_the_end(kafka, group_id, "orders.placed.v1")
    keyring = KeyStore(keyring_path(keys_dir)).keyring()
    for s in seen:  # every output verifies as any consumer would check it
        raw = [(k, v.encode()) for k, v in s.headers.items()]
        assert verify_record(s.topic, s.key.encode(), s.value, raw, _now_ms(), keyring).source == "/eventfleet/payments"
    causes_by_key = defaultdict(list)
    for s in sorted(seen, key=lambda s: (s.partition, s.offset)):
        causes_by_key[s.key].append(s.headers["ce_causationid"])
    for order in orders:
        assert causes_by_key[order.order_id] == [r.envelope.id for r in records if r.key == order.order_id]
    assert set(handled.values()) == {1}, "each event handled once: nothing redelivered"


async def test_a_failing_event_goes_to_its_retry_topic_while_the_rest_of_its_batch_is_emitted_and_committed(kafka, group_id, keys_dir):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    flaky = an_order(order_id=f"ord-batch-flaky-{uuid.uuid4().hex[:6]}")
    steady = [an_order() for _ in range(20)]
    records = [a_record(o) for o in [*steady[:10], flaky, *steady[10:]]]
    handled: Counter = Counter()
    async with TopicReader(kafka, [PaymentAuthorized], raw_topics=["orders.placed.v1.retry.1"]) as reader:
        await produce_raw(kafka, [_raw(r) for r in records])
        async with RunningApps(_relay(kafka, group_id, handled, fail_first={flaky.order_id})):
            await reader.wait_for_keys([o.order_id for o in [*steady, flaky]], per_key=1, timeout_s=30)
            await reader.wait_for(lambda seen: sum(s.key == flaky.order_id for s in seen) >= 2, timeout_s=30)
            await _committed_to_the_end(kafka, group_id, "orders.placed.v1")
    flaky_seen = [s.topic for s in reader.seen if s.key == flaky.order_id]
    assert flaky_seen.count("orders.placed.v1.retry.1") == 1 and flaky_seen.count("payments.authorized.v1") == 1
    assert handled[records[10].envelope.id] == 2 and all(handled[r.envelope.id] == 1 for r in records if r.key != flaky.order_id)


async def test_a_batch_whose_retry_cannot_be_stored_is_redelivered_whole_and_never_committed_past(kafka, group_id, keys_dir):
    """The retry topic refuses once: that outcome is not durable, so the runner seeks back to the batch's first offsets and
    the whole batch comes again; an at-least-once consumer sees the others twice, and loses nothing."""
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    flaky = an_order(order_id=f"ord-batch-refused-{uuid.uuid4().hex[:6]}")
    others = [an_order() for _ in range(10)]
    records = [a_record(o) for o in [*others[:5], flaky, *others[5:]]]
    handled: Counter = Counter()
    relay = _relay(kafka, group_id, handled, fail_first={flaky.order_id})
    refusals = []
    original_retry = relay.broker.failures.retry

    async def retry_refused_once(*args, **kwargs):
        if not refusals:
            refusals.append(args[0])
            raise ConnectionError("the retry topic is unreachable")
        await original_retry(*args, **kwargs)

    relay.broker.failures.retry = retry_refused_once
    async with TopicReader(kafka, [PaymentAuthorized]) as reader:
        await produce_raw(kafka, [(*_raw(r), 0) for r in records])  # one partition: one batch, in this order
        async with RunningApps(relay):
            await reader.wait_for_keys([o.order_id for o in [*others, flaky]], timeout_s=40)
            await _committed_to_the_end(kafka, group_id, "orders.placed.v1")
    assert refusals == ["orders.placed.v1.retry.1"]
    assert all(handled[r.envelope.id] >= 2 for r in records[:5]), "the batch came again from its first offset"
    assert {s.key for s in reader.seen} >= {o.order_id for o in [*others, flaky]}, "nothing lost"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
