"""Offset commits: once per batch, after every outcome of the batch is durable; and where to go back when one is not."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

__all__ = ["OffsetCommitter", "deferred_sends", "pending_sends"]

log = structlog.get_logger("fleet.runtime.delivery.commits")

# Set while a batch is handled: `EventPublisher.emit` puts its send here instead of waiting for the broker's ack, and
# the batch's offsets are committed only once every one of them is acknowledged. None outside a handler: emit waits.
pending_sends: contextvars.ContextVar[list[asyncio.Future] | None] = contextvars.ContextVar(
    "fleet_pending_sends", default=None
)


def deferred_sends() -> list[asyncio.Future] | None:
    """The running handler's list of unacknowledged sends, or None outside one."""
    return pending_sends.get()


class OffsetCommitter:
    """Commits a subscriber's offsets: one request per batch, never before the batch's outcomes are durable.

    Why not commit each record at once: that is a round trip to the group coordinator per event, which the consumer
    waits for before its next record. A crash before the commit redelivers the batch; the fleet's handlers are
    idempotent for that (the inbox), so it changes what a crash costs, never what is committed before it is durable."""

    def __init__(self, subscription: Any, committed: Callable[[], None] | None = None) -> None:
        self.subscription = subscription  # its `consumer`: None before start and on FastStream's in-memory broker
        self.committed = committed  # told of each commit the broker accepted (the worker's last-commit gauge)

    async def commit(self, records: Sequence[Any]) -> None:
        """Commits past the last of `records` on each of their partitions."""
        consumer = self.subscription.consumer
        if not records or consumer is None:
            return
        last: dict[TopicPartition, int] = {}
        for record in records:
            last[TopicPartition(record.topic, record.partition)] = record.offset
        try:
            await consumer.commit({tp: OffsetAndMetadata(offset + 1, "") for tp, offset in last.items()})
        except Exception as error:  # a rebalance took the partitions: their new owner gets the records again
            log.warning(
                "commit_refused",
                error=repr(error)[:300],
                partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in last),
            )
            return
        if self.committed is not None:
            self.committed()

    def redeliver(self, records: Sequence[Any]) -> None:
        """These records' outcomes are not durable: the consumer goes back to the first of them on each partition, so
        each is delivered again with everything after it."""
        consumer = self.subscription.consumer
        if consumer is None:
            return
        first: dict[TopicPartition, int] = {}
        for record in records:
            first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
        for tp, offset in first.items():
            with contextlib.suppress(Exception):  # no longer assigned: the new owner resumes from the committed offset
                consumer.seek(tp, offset)
