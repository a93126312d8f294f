"""Offset commits, a little later and together: a record's offset is committed once its outcome is durable and the broker
has acknowledged everything its handler emitted; one request every `interval_s` per consumer instead of one per record."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import structlog
from aiokafka import ConsumerRebalanceListener

__all__ = ["FlushOnRevoke", "OffsetCommitter", "deferred_sends", "pending_sends"]

log = structlog.get_logger("fleet.commits")

# Set while a record (or a batch) is handled: `EventPublisher.emit` puts its send here instead of waiting for the broker's
# ack, and the offset is committed only once every one of them is acknowledged. None outside a handler: emit waits.
pending_sends: contextvars.ContextVar[list[asyncio.Future] | None] = contextvars.ContextVar("fleet_pending_sends", default=None)


def deferred_sends() -> list[asyncio.Future] | None:
    """The running handler's list of unacknowledged sends, or None outside one."""
    return pending_sends.get()


class OffsetCommitter:
    """Per consumer: `done(record, sends)` once a record's outcome is durable, with the sends its handler left
    unacknowledged; a flush (every `interval_s`, before the consumer stops, when partitions are revoked) waits for those
    acks in record order and commits, per partition, up to the last record whose sends all arrived. A send that failed
    is not committed past: the consumer seeks back to its record, which is redelivered with everything after it.

    Why not commit each record at once: that is a round trip to the group coordinator per event, which the consumer
    waits for before its next record. Committing later changes what a crash costs (up to `interval_s` of records are
    redelivered; the fleet's handlers are idempotent for that), never what is committed before it is durable."""

    def __init__(self, subscriber: Any, interval_s: float = 0.1) -> None:
        self.subscriber = subscriber
        self.interval_s = interval_s
        self._pending: dict[Any, list[tuple[int, list[asyncio.Future]]]] = {}
        self._timer: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def done(self, record: Any, sends: list[asyncio.Future] = ()) -> None:
        from aiokafka import TopicPartition

        self._pending.setdefault(TopicPartition(record.topic, record.partition), []).append((record.offset, list(sends)))
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._flush_later())  # one task per interval, not per record

    def redeliver(self, record: Any) -> None:
        """The record's outcome is not durable: seek back to it, and commit nothing from it on."""
        from aiokafka import TopicPartition

        tp = TopicPartition(record.topic, record.partition)
        self._pending[tp] = [(o, s) for o, s in self._pending.get(tp, []) if o < record.offset]
        self._seek(tp, record.offset)

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.interval_s)
        await self.flush()

    async def flush(self, partitions: Any = None) -> None:
        """Commits what is ready now (only `partitions`, when given: the ones being revoked)."""
        async with self._lock:  # flushes in order, so an older one never overwrites a newer commit
            taken = {tp: entries for tp, entries in self._pending.items() if partitions is None or tp in partitions}
            for tp in taken:
                del self._pending[tp]
            offsets = {}
            for tp, entries in taken.items():
                if (last := await self._last_acknowledged(tp, entries)) is not None:
                    offsets[tp] = last
            await self._commit(offsets)

    async def _last_acknowledged(self, tp: Any, entries: list[tuple[int, list[asyncio.Future]]]) -> int | None:
        last = None
        for offset, sends in entries:
            try:
                if sends:
                    await asyncio.gather(*sends)
            except Exception as error:  # the broker never took an emitted record: its cause must come again
                log.error("emitted_record_not_acknowledged", topic=tp.topic, partition=tp.partition, offset=offset,
                          error_class=type(error).__name__, reason=str(error)[:300])
                self._seek(tp, offset)
                # What was handled since (after this flush began) comes again too: none of it may be committed.
                self._pending[tp] = [(o, s) for o, s in self._pending.get(tp, []) if o < offset]
                break
            last = offset
        return last

    async def _commit(self, offsets: dict) -> None:
        from aiokafka.structs import OffsetAndMetadata

        consumer = getattr(self.subscriber, "consumer", None)
        if not offsets or consumer is None:  # the in-memory test broker has no consumer: nothing to commit there
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(offset + 1, "") for tp, offset in offsets.items()})
        except Exception as error:  # a rebalance took the partitions: their new owner gets the records again
            log.warning("commit_refused", error=repr(error)[:300], partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in offsets))

    def _seek(self, tp: Any, offset: int) -> None:
        consumer = getattr(self.subscriber, "consumer", None)
        if consumer is not None:
            try:
                consumer.seek(tp, offset)
            except Exception:  # no longer assigned: the new owner resumes from the committed offset
                pass


class FlushOnRevoke(ConsumerRebalanceListener):
    """A rebalance listener: before partitions move to another member, commit what is done on them, so their new owner
    does not redo it. (aiokafka awaits it during the rebalance; the committer is set once the subscriber exists.)"""

    def __init__(self) -> None:
        self.committer: OffsetCommitter | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.committer is not None:
            await self.committer.flush(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None
