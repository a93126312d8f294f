"""Failures on the real broker: transient ones are retried after growing delays without holding up the partition,
permanent ones and exhausted retries land on the dead-letter topic with their history, and nothing is committed
that did not reach a durable outcome."""

from collections import Counter

from contracts import OrderPlaced
from fleet.runtime.broker import create_broker, subscriber_for
from fleet.runtime.errors import PermanentError, TransientError
from fleet.runtime.settings import KafkaSettings
from tests.support import RunningApps, TopicReader, a_record, an_order, as_raw, produce_raw, start_group_at_end, unique_order_id

DELAYS = (0.2, 0.5, 1.0)


class FlakyHandler:
    """Fails each order as many times as its id says (`...-fails-2`), transiently, or for ever with `always`,
    or permanently with `never`; records every attempt in order."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.handled: list[str] = []
        self.timeline: list[tuple[str, int]] = []

    async def __call__(self, order: OrderPlaced) -> None:
        self.attempts[order.order_id] += 1
        self.timeline.append((order.order_id, self.attempts[order.order_id]))
        if "never" in order.order_id:
            raise PermanentError("this order can never be handled")
        failures = 99 if "always" in order.order_id else int(order.order_id.rsplit("-fails-", 1)[-1]) if "-fails-" in order.order_id else 0
        if self.attempts[order.order_id] <= failures:
            raise TransientError(f"dependency down (attempt {self.attempts[order.order_id]})")
        self.handled.append(order.order_id)


def _worker(kafka: str, group_id: str, handler: FlakyHandler):
    """A worker with the fleet's subscriber (it signs retries with the payments key, a consumer of orders)."""
    broker = create_broker("payments", KafkaSettings(bootstrap_servers=kafka))

    async def on_order_placed(order: OrderPlaced) -> None:
        await handler(order)

    subscriber_for(broker, OrderPlaced, group_id=group_id, retry_delays_s=DELAYS)(on_order_placed)

    class App:  # what RunningApps needs
        pass

    app = App()
    app.broker = broker
    return app


def _order(tag: str):
    return a_record(an_order(order_id=f"{unique_order_id()}-{tag}"))


async def test_a_transient_failure_that_heals_is_handled_on_a_later_attempt(kafka, group_id):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    handler = FlakyHandler()
    heals_after_two = _order("fails-2")
    async with RunningApps(_worker(kafka, group_id, handler)), TopicReader(kafka, raw_topics=["orders.placed.v1.dlq"]) as reader:
        await produce_raw(kafka, [as_raw(heals_after_two)])
        await reader.wait_for(lambda _: heals_after_two.key in handler.handled, timeout_s=30)
    assert handler.attempts[heals_after_two.key] == 3
    assert not [s for s in reader.seen if s.key == heals_after_two.key]


async def test_exhausted_and_permanent_failures_are_dead_lettered_with_their_history(kafka, group_id):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    handler = FlakyHandler()
    always, never = _order("always"), _order("never")
    async with RunningApps(_worker(kafka, group_id, handler)), TopicReader(kafka, raw_topics=["orders.placed.v1.dlq"]) as reader:
        await produce_raw(kafka, [as_raw(always), as_raw(never)])
        dead = await reader.wait_for_keys([always.key, never.key], timeout_s=30)
    by_key = {s.key: s.headers for s in dead}
    assert by_key[never.key]["dlq-reason"] == "permanent_error" and by_key[never.key]["retry-attempt"] == "1"
    assert handler.attempts[never.key] == 1
    exhausted = by_key[always.key]
    assert exhausted["dlq-reason"] == "retries_exhausted" and exhausted["retry-attempt"] == "4" and handler.attempts[always.key] == 4
    assert exhausted["retry-error-class"] == "TransientError" and exhausted["retry-first-failure-at"] < exhausted["retry-last-failure-at"]
    assert exhausted["dlq-original-topic"] == "orders.placed.v1", "the original topic, not the last retry topic"
    assert exhausted["ce_id"] == always.envelope.id and exhausted["eventfleet-original-keyid"] == always.envelope.keyid
    assert exhausted["dlq-group"] == group_id


async def test_a_poison_record_does_not_hold_up_the_records_behind_it(kafka, group_id):
    """In one partition: the valid orders behind the poison are handled right after its first failure, long before its
    retries are over (which take 1.7 s here), so the partition never waits for it."""
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    handler = FlakyHandler()
    poison = _order("always")
    behind = [_order("fails-0") for _ in range(3)]
    async with RunningApps(_worker(kafka, group_id, handler)), TopicReader(kafka, raw_topics=["orders.placed.v1.dlq"]) as reader:
        await produce_raw(kafka, [(*as_raw(r), 0) for r in [poison, *behind]])  # all in partition 0, poison first
        await reader.wait_for_keys([poison.key], timeout_s=30)
    timeline = handler.timeline
    second_try_of_poison = timeline.index((poison.key, 2))
    assert all(timeline.index((r.key, 1)) < second_try_of_poison for r in behind)
    assert handler.handled == [r.key for r in behind], "in their order"
