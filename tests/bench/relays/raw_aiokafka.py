"""Case 2, the raw client: consume `bench.in` in a group, produce each record to `bench.out`, commit; nothing else."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ._common import Clock, arguments, write_result


async def relay(bootstrap: str, source: str, sink: str, group: str, events: int) -> Clock:
    """Each `getmany` batch: send every record, wait for all their acks, then commit the batch's offsets.
    The client defaults otherwise (the producer's acks, linger, batch sizes; the consumer's fetch sizes)."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    await consumer.start()
    clock, done = Clock(events), 0
    try:
        while done < events:
            batches = await consumer.getmany(timeout_ms=1000)
            if not batches:
                continue
            clock.first_consumed()
            acks = [await producer.send(sink, m.value, key=m.key) for records in batches.values() for m in records]
            await asyncio.gather(*acks)
            await consumer.commit()
            done += len(acks)
        clock.last_done()
    finally:
        await consumer.stop()
        await producer.stop()
    return clock


def main() -> None:
    args = arguments(__doc__)
    clock = asyncio.run(relay(args.bootstrap, args.source, args.sink, args.group, args.events))
    write_result(args.result, clock.result(commit="manual, after each getmany batch's produce acks"))


if __name__ == "__main__":
    main()
