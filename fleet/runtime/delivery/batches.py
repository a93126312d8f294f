"""Batch consumption: up to `max_records` records per poll, verified together, handled one by one, committed once.

The records are verified in a small thread pool (Ed25519 releases the GIL), each handled by the same per-event handler;
everything they emit is sent at once, and one commit follows once the broker has it all."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from contracts import Envelope, Rejected, Topic, decode_keyed_value
from fleet.runtime.delivery.commits import OffsetCommitter, pending_sends
from fleet.runtime.delivery.dead_letters import Rejection
from fleet.runtime.delivery.outcomes import RecordOutcomes, Subscription

__all__ = ["VERIFY_THREADS", "BatchRunner", "raw_batch_parser", "records_of"]

VERIFY_THREADS = 2  # verification threads per worker process: one per core of a small pod
PARALLEL_VERIFY_FROM = 16  # smaller batches verify inline: two thread hops cost more than they save


async def raw_batch_parser(records: tuple, original: Callable[[tuple], Awaitable[Any]]) -> Any:
    """FastStream's batch parser decodes every header of every record as UTF-8 and raises on one that is not: a single
    hostile record would fail its batch. This parser reads nothing; the runner verifies each record's raw headers."""
    from faststream.kafka.message import FAKE_CONSUMER, KafkaMessage

    first, last = records[0], records[-1]
    # The runner commits itself (AckPolicy.MANUAL): the message needs no consumer of its own.
    return KafkaMessage(
        body=b"",
        raw_message=records,
        message_id=f"{first.offset}-{last.offset}-{first.timestamp}",
        consumer=FAKE_CONSUMER,
    )


async def records_of(message: Any) -> tuple:
    """The decoder of a batch subscriber: the handler gets the raw records, and the runner decides what each one is."""
    return message.raw_message


@dataclass
class BatchRunner:
    """Runs one batch subscriber's records through the worker's per-record steps (RecordOutcomes), then commits."""

    # The service's per-event handler, called as fleet.runtime.broker calls it (envelope from context).
    handler: Callable[[Any], Awaitable[Any]]
    topics: dict[str, Topic]  # subscribed topic name → its registry topic
    outcomes: RecordOutcomes
    subscription: Subscription  # its retry policy, and its FastStream subscriber, whose consumer commits and seeks
    committed: Callable[[], None] | None = None  # told of each commit the broker accepted
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.policy = self.subscription.policy
        # The batch waits for its acks itself, then commits at once: no timer (interval 0).
        self.committer = OffsetCommitter(
            self.subscription,
            interval_s=0,
            send_failed=lambda error: self.outcomes.state.send_failed(error, "publishing what its handler emitted"),
            committed=self.committed,
        )

    async def __call__(self, records: Sequence[Any]) -> None:
        try:
            await self._run(records)
        except BaseException:
            # An outcome is not durable (the retry or dead-letter topic, or an emitted record, was not acknowledged):
            # go back to the batch's first offsets, so every record of it is redelivered rather than skipped.
            firsts: dict[tuple[str, int], Any] = {}
            for record in records:
                firsts.setdefault((record.topic, record.partition), record)
            for record in firsts.values():
                self.committer.redeliver(record)
            raise
        for record in records:
            self.committer.done(record)
        await self.committer.flush()

    async def _run(self, records: Sequence[Any]) -> None:
        metrics = self.outcomes.state.metrics
        for record in records:
            metrics.record_received(record.topic)
        checked = await self._verify_all(records)
        pending: list[asyncio.Future] = []
        token = pending_sends.set(pending)
        try:
            for record, envelope in zip(records, checked, strict=True):  # one outcome per record, in order
                if isinstance(envelope, Rejected):
                    await self.outcomes.dead_letter(Rejection.of(record, envelope.reason, envelope.detail), self.policy)
                else:
                    await self._handle_one(record, envelope)
        finally:
            pending_sends.reset(token)
        if pending:
            await asyncio.gather(*pending)  # every emitted record is on the broker before any offset is committed

    async def _handle_one(self, record: Any, envelope: Envelope) -> None:
        topic = self.topics[record.topic]

        async def call() -> Any:
            return await self.handler(decode_keyed_value(topic, record.key, record.value))

        async def payload() -> Any:
            return decode_keyed_value(topic, record.key, record.value)

        await self.outcomes.run(record, envelope, self.policy, self.subscription, call, payload)

    async def _verify_all(self, records: Sequence[Any]) -> list[Envelope | Rejected]:
        if len(records) < PARALLEL_VERIFY_FROM:
            return self._verify_chunk(records)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="fleet-verify")
        loop = asyncio.get_running_loop()
        size = -(-len(records) // VERIFY_THREADS)
        chunks = [records[i : i + size] for i in range(0, len(records), size)]
        done = await asyncio.gather(*(loop.run_in_executor(self._pool, self._verify_chunk, chunk) for chunk in chunks))
        return [outcome for chunk in done for outcome in chunk]

    def _verify_chunk(self, records: Sequence[Any]) -> list[Envelope | Rejected]:
        outcomes: list[Envelope | Rejected] = []
        for record in records:
            try:
                outcomes.append(self.outcomes.verify(record))
            except Rejected as refused:
                outcomes.append(refused)
        return outcomes

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
