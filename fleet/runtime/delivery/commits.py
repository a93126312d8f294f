"""Offset commits, a little later and together: one request every `interval_s` per consumer, not one per record.

A record's offset is committed once its outcome is durable and the broker has acked everything its handler emitted."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any, Callable, Sequence

import structlog
from aiokafka import ConsumerRebalanceListener

__all__ = ["FlushOnRevoke", "OffsetCommitter", "deferred_sends", "pending_sends"]

log = structlog.get_logger("fleet.runtime.delivery.commits")

# Set while a record (or a batch) is handled: `EventPublisher.emit` puts its send here instead of waiting for the
# broker's ack, and the offset is committed only once all of them are acknowledged. None outside a handler: emit waits.
pending_sends: contextvars.ContextVar[list[asyncio.Future] | None] = contextvars.ContextVar(
    "fleet_pending_sends", default=None
)


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

    def __init__(
        self,
        subscriber: Any,
        interval_s: float = 0.1,
        send_failed: Callable[[BaseException], bool] | None = None,
        committed: Callable[[], None] | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.interval_s = interval_s
        self.committed = committed  # told of each commit the broker accepted (the worker's last-commit gauge)
        # Told of a send's error: Kafka refusing the worker (an ACL), or a producer stopped for good, stops the worker
        # (WorkerState.send_failed), where redelivering the record would fail the same way forever.
        self.send_failed = send_failed
        self._pending: dict[Any, list[tuple[int, list[asyncio.Future]]]] = {}
        self._timer: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def done(self, record: Any, sends: Sequence[asyncio.Future] = ()) -> None:
        from aiokafka import TopicPartition

        self._pending.setdefault(TopicPartition(record.topic, record.partition), []).append(
            (record.offset, list(sends))
        )
        if self.interval_s > 0 and (self._timer is None or self._timer.done()):  # interval 0: the caller flushes
            self._timer = asyncio.get_running_loop().create_task(
                self._flush_later()
            )  # one task per interval, not per record

    def redeliver(self, record: Any) -> None:
        """The record's outcome is not durable: seek back to it, and commit nothing from it on."""
        from aiokafka import TopicPartition

        tp = TopicPartition(record.topic, record.partition)
        self._pending[tp] = [(o, s) for o, s in self._pending.get(tp, []) if o < record.offset]
        self._seek(tp, record.offset)

    async def _flush_later(self) -> None:
        while self._pending:
            await asyncio.sleep(self.interval_s)
            await self.flush(wait=False)

    async def flush(self, partitions: Any = None, *, wait: bool = True) -> None:
        """Commits, per partition, up to the last record whose sends all arrived (only `partitions`, when given: the
        ones being revoked). `wait` first waits for every outstanding ack (before a stop or a rebalance); the timer does
        not, and leaves what is still in flight for its next turn, so it never holds up the records being handled."""
        async with self._lock:  # flushes in order, so an older one never overwrites a newer commit
            taken = {tp: entries for tp, entries in self._pending.items() if partitions is None or tp in partitions}
            for tp in taken:
                del self._pending[tp]
            if wait:
                sends = [send for entries in taken.values() for _, record_sends in entries for send in record_sends]
                if sends:
                    await asyncio.gather(*sends, return_exceptions=True)
            offsets = {}
            for tp, entries in taken.items():
                last, waiting = self._last_acknowledged(tp, entries)
                if waiting:  # still in flight: back in front of what was handled meanwhile
                    self._pending[tp] = waiting + self._pending.get(tp, [])
                if last is not None:
                    offsets[tp] = last
            await self._commit(offsets)

    def _last_acknowledged(self, tp: Any, entries: list) -> tuple[int | None, list]:
        """The last offset whose sends (and those of every record before it) are acknowledged, and the entries after it
        that are still waiting for an ack. A failed send sends the consumer back to its record."""
        last = None
        for index, (offset, sends) in enumerate(entries):
            if not all(send.done() for send in sends):
                return last, entries[index:]
            error = next((send.exception() for send in sends if not send.cancelled() and send.exception()), None)
            if error is not None or any(send.cancelled() for send in sends):
                # The broker never took an emitted record: its cause must come again, with everything after it.
                if error is not None and self.send_failed is not None:
                    self.send_failed(error)
                log.error(
                    "emitted_record_not_acknowledged",
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=offset,
                    error_class=type(error).__name__,
                    reason=str(error)[:300],
                )
                self._seek(tp, offset)
                self._pending[tp] = [(o, s) for o, s in self._pending.get(tp, []) if o < offset]
                return last, []
            last = offset
        return last, []

    async def _commit(self, offsets: dict) -> None:
        from aiokafka.structs import OffsetAndMetadata

        consumer = getattr(self.subscriber, "consumer", None)
        if not offsets or consumer is None:  # the in-memory test broker has no consumer: nothing to commit there
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(offset + 1, "") for tp, offset in offsets.items()})
            if self.committed is not None:
                self.committed()
        except Exception as error:  # a rebalance took the partitions: their new owner gets the records again
            log.warning(
                "commit_refused",
                error=repr(error)[:300],
                partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in offsets),
            )

    def _seek(self, tp: Any, offset: int) -> None:
        consumer = getattr(self.subscriber, "consumer", None)
        if consumer is not None:
            with contextlib.suppress(Exception):  # no longer assigned: the new owner resumes from the committed offset
                consumer.seek(tp, offset)


class FlushOnRevoke(ConsumerRebalanceListener):
    """A rebalance listener: before partitions move to another member, commit what is done on them, so their new owner
    does not redo it. (aiokafka awaits it during the rebalance; the committer is set once the subscriber exists.)"""

    def __init__(self) -> None:
        self.committer: OffsetCommitter | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.committer is not None:
            await self.committer.flush(set(revoked), wait=True)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None
