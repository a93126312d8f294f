"""Reading a fixed span of each partition with a plain consumer (no group): from a start offset to the end of now."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

__all__ = ["STALL_S", "read_spans"]

STALL_S = 30.0  # a read that gets nothing for this long has lost the broker: fail rather than hang


async def read_spans(consumer: Any, spans: dict) -> AsyncIterator[list]:
    """Batches of the records of each partition's `(start, end)` span, on partitions the consumer has assigned; never
    waits for records beyond the ends, and pauses every assigned partition that has nothing (more) to read."""
    ends = {tp: end for tp, (start, end) in spans.items() if start < end}
    consumer.pause(*(tp for tp in consumer.assignment() if tp not in ends))
    for tp in ends:
        consumer.seek(tp, spans[tp][0])
    loop = asyncio.get_running_loop()
    heard_at = loop.time()
    while ends:
        batches = await consumer.getmany(*ends, timeout_ms=500)
        records = [r for tp, batch in batches.items() for r in batch if r.offset < ends.get(tp, 0)]
        for tp in list(ends):
            if await consumer.position(tp) >= ends[tp]:
                consumer.pause(tp)
                del ends[tp]
        if batches:
            heard_at = loop.time()
        elif ends and loop.time() - heard_at > STALL_S:
            raise TimeoutError(
                f"no records from the broker for {STALL_S:.0f}s while {len(ends)} partition(s) were unread"
            )
        if records:
            yield records
