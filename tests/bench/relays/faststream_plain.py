"""Case 3, plain FastStream: a KafkaBroker with its defaults, a pydantic subscriber on `bench.in` publishing to `bench.out`."""

from __future__ import annotations

import asyncio

from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from ._common import Clock, arguments, write_result


class BenchEvent(BaseModel):
    """The benchmark event (tests.bench.events): validated on the way in, serialized again on the way out."""

    event_id: str
    seq: int
    order_id: str
    amount_cents: int
    currency: str
    note: str


async def relay(bootstrap: str, source: str, sink: str, group: str, events: int) -> Clock:
    """FastStream's defaults throughout (auto-commit, one message at a time, access log at INFO, the publish awaits
    its ack), except `auto_offset_reset="earliest"`: the events are in the topic before the group exists."""
    broker = KafkaBroker(bootstrap)
    clock, finished = Clock(events), asyncio.Event()
    handled = 0

    @broker.subscriber(source, group_id=group, auto_offset_reset="earliest")
    async def on_event(event: BenchEvent) -> None:
        nonlocal handled
        clock.first_consumed()  # the first call: FastStream consumed and decoded the first event
        await broker.publish(event, topic=sink, key=event.order_id.encode())
        handled += 1
        if handled == events:
            clock.last_done()
            finished.set()

    async with broker:
        await broker.start()
        await finished.wait()
        closing = asyncio.get_running_loop().time()
    # Auto-commit commits on its timer (5 s) and once more when the consumer stops, inside the close above.
    clock.close_s = asyncio.get_running_loop().time() - closing
    return clock


def main() -> None:
    args = arguments(__doc__)
    clock = asyncio.run(relay(args.bootstrap, args.source, args.sink, args.group, args.events))
    write_result(args.result, clock.result(commit="auto-commit (FastStream default); window ends at the last publish ack",
                                           close_s=getattr(clock, "close_s", None)))


if __name__ == "__main__":
    main()
