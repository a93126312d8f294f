"""Stopping a worker on the real broker: a handler that outlives the graceful bound is abandoned and not committed,
so the record is redelivered to whoever takes over; a handler that finishes within the bound is committed once."""

import asyncio

from contracts import OrderPlaced
from fleet.runtime.broker import create_broker, subscriber_for
from fleet.runtime.settings import KafkaSettings
from tests.support import RunningApps, a_record, an_order, as_raw, eventually, produce_raw, start_group_at_end


class Handler:
    def __init__(self, takes_s: float) -> None:
        self.takes_s = takes_s
        self.started: list[str] = []
        self.finished: list[str] = []

    async def __call__(self, order: OrderPlaced) -> None:
        self.started.append(order.order_id)
        await asyncio.sleep(self.takes_s)
        self.finished.append(order.order_id)


def _worker(kafka: str, group_id: str, handler: Handler, graceful_timeout_s: float):
    broker = create_broker("payments", KafkaSettings(bootstrap_servers=kafka, graceful_timeout_s=graceful_timeout_s))

    async def on_order_placed(order: OrderPlaced) -> None:
        await handler(order)

    subscriber_for(broker, OrderPlaced, group_id=group_id)(on_order_placed)
    return type("App", (), {"broker": broker})()


async def test_a_handler_cut_off_at_shutdown_is_not_committed_and_is_redelivered(kafka, group_id):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    order = a_record(an_order())
    slow = Handler(takes_s=30)
    async with RunningApps(_worker(kafka, group_id, slow, graceful_timeout_s=0.5)):
        await produce_raw(kafka, [as_raw(order)])
        await eventually(lambda: order.key in slow.started, "the slow handler to start", timeout_s=30, every_s=0.05)
    assert slow.finished == [], "cut off by the graceful bound"
    quick = Handler(takes_s=0)
    async with RunningApps(_worker(kafka, group_id, quick, graceful_timeout_s=5)):
        await eventually(lambda: order.key in quick.finished, "the redelivered order to be handled", timeout_s=30, every_s=0.05)


async def test_a_handler_that_finishes_within_the_bound_is_committed_and_not_redelivered(kafka, group_id):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    order, marker = a_record(an_order()), a_record(an_order())
    first = Handler(takes_s=1)
    async with RunningApps(_worker(kafka, group_id, first, graceful_timeout_s=10)):
        await produce_raw(kafka, [(*as_raw(order), 0)])
        await eventually(lambda: order.key in first.started, "the handler to start", timeout_s=30, every_s=0.05)
    assert first.finished == [order.key], "finished during the graceful stop"
    second = Handler(takes_s=0)
    async with RunningApps(_worker(kafka, group_id, second, graceful_timeout_s=5)):
        await produce_raw(kafka, [(*as_raw(marker), 0)])  # same partition, behind it
        await eventually(lambda: marker.key in second.finished, "the marker behind it to be handled", timeout_s=30, every_s=0.05)
    assert order.key not in second.started
