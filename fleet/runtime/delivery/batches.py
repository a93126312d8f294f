"""The per-batch engine: up to `max_records` records per poll, verified together, handled one by one, committed once.

Every subscriber consumes this way (`FLEET_KAFKA_BATCH_MAX_RECORDS=1` makes it one record at a time). Per batch:
1. verify every record off the event loop, in a small thread pool (libsodium releases the GIL);
2. open the worker's batch scopes (a stateful worker's store: one transaction for the batch);
3. run the handler once per event, in order, each in the record's context within its time limit: in a store, each
   handler's transaction is a savepoint, so a failing event is undone alone and goes to its retry or dead-letter path;
4. commit the batch's transaction once (the relay then publishes its outbox rows, already in memory);
5. wait for the acks of everything the handlers emitted, and commit the offsets once.
A retry tier's records wait until they are due first, outside any transaction: a tier's batch runs in due slices.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

from contracts import Envelope, Rejected, Topic, decode_keyed_value
from fleet.runtime.delivery.commits import OffsetCommitter, pending_sends
from fleet.runtime.delivery.dead_letters import Rejection
from fleet.runtime.delivery.outcomes import RecordOutcomes, Subscription
from fleet.runtime.delivery.retries import due_ms, now_ms

__all__ = [
    "VERIFY_THREADS",
    "BatchRunner",
    "BatchScope",
    "batch_subscriber_options",
    "raw_batch_parser",
    "records_of",
]

log = structlog.get_logger("fleet.events")

# What a worker opens around each batch (a stateful worker's store transaction, `StateHandle.batch`); it must commit
# when the block ends and roll back when it raises.
BatchScope = Callable[[], contextlib.AbstractAsyncContextManager[Any]]

VERIFY_THREADS = 2  # verification threads per worker process: one per core of a small pod
PARALLEL_VERIFY_FROM = 16  # smaller batches verify inline: two thread hops cost more than they save
IDLE_SLEEP_MS = 100  # FastStream's sleep after an empty poll: a record that comes then waits at most this long
IDLE_FETCHER_WAKE_MS = 2_000


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


def batch_subscriber_options(fetch_max_wait_ms: int, max_records: int) -> dict[str, Any]:
    """FastStream's subscriber options for every consumer of a worker (its topics, its retry tiers, the operators'
    control topic): raw batches the fleet verifies and commits itself, and an idle consumer that costs next to nothing.
    """
    from faststream import AckPolicy

    return {
        "batch": True,
        "max_records": max_records,
        # FastStream sleeps this long after an empty poll. A poll itself waits longer (FleetConsumer.getmany), and
        # returns as soon as a record arrives; the broker holds an idle consumer's fetch as long.
        "batch_timeout_ms": IDLE_SLEEP_MS,
        "fetch_max_wait_ms": fetch_max_wait_ms,
        # How often aiokafka's fetch routine looks around when nothing happens (its default, 200 ms, wakes each idle
        # consumer five times a second); what matters (a fetch answered, records consumed, a rebalance) wakes it.
        "consumer_timeout_ms": IDLE_FETCHER_WAKE_MS,
        # The runner reads raw records: FastStream's batch parser would decode headers a hostile record may break.
        "parser": raw_batch_parser,
        "decoder": records_of,
        # The fleet commits, never FastStream: the runner, once a batch's outcomes are durable, and it seeks back to
        # the first record of a batch that is not (fleet.runtime.delivery.commits).
        "ack_policy": AckPolicy.MANUAL,
        # Never let a sender's `reply_to` header make us publish to a topic it names.
        "no_reply": True,
    }


async def records_of(message: Any) -> tuple:
    """The decoder of a batch subscriber: the handler gets the raw records, and the runner decides what each one is."""
    return message.raw_message


@dataclass
class BatchRunner:
    """Runs one subscriber's batches through the worker's per-record steps (RecordOutcomes), then commits."""

    # The service's per-event handler, called as fleet.runtime.broker calls it (envelope from context).
    handler: Callable[[Any], Awaitable[Any]]
    topics: dict[str, Topic]  # subscribed topic name → its registry topic
    outcomes: RecordOutcomes
    subscription: Subscription  # its retry policy, and its FastStream subscriber, whose consumer commits and seeks
    scopes: Sequence[BatchScope] = ()  # the worker's; attach_store adds the store's (the list is read per batch)
    committed: Callable[[], None] | None = None  # told of each commit the broker accepted
    verify_threads: int = VERIFY_THREADS  # 0: a batch is verified on the event loop (KafkaSettings.verify_threads)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.policy = self.subscription.policy
        self.committer = OffsetCommitter(self.subscription, committed=self.committed)

    async def __call__(self, records: Sequence[Any]) -> None:
        metrics = self.outcomes.state.metrics
        for topic, count in collections.Counter(record.topic for record in records).items():
            metrics.record_received(topic, count)
        checked = await self._verify_all(records)
        unhandled = self.subscription.unhandled
        for record in records:
            unhandled.setdefault((record.topic, record.partition), record.offset)
        done = 0
        try:
            async for start, end in self._slices(records, checked):
                await self._run_slice(records[start:end], checked[start:end])
                done = end
                await self.committer.commit(records[start:end])
        except BaseException:
            # An outcome is not durable (the store, a retry or dead-letter topic, or an emitted record failed): go back
            # to the first record not committed on each partition, so it is redelivered with everything after it.
            self.committer.redeliver(records[done:])
            raise
        finally:
            unhandled.clear()

    async def _slices(
        self, records: Sequence[Any], checked: list[Envelope | Rejected]
    ) -> AsyncIterator[tuple[int, int]]:
        """The whole batch on a topic's own subscriber. On a retry tier, the records that are due, a slice at a time:
        waiting for one happens outside any transaction, so it never holds the store."""
        if not self.policy.tier:
            yield 0, len(records)
            return
        start = 0
        while start < len(records):
            end = start
            while end < len(records):
                record, envelope = records[end], checked[end]
                waits = not isinstance(envelope, Rejected) and not self.outcomes.is_foreign(record, self.policy)
                if waits and due_ms(record.headers or ()) > now_ms():
                    if end > start:
                        break  # what is due goes first
                    await self.outcomes.wait_until_due(due_ms(record.headers or ()))
                end += 1
            yield start, end
            start = end

    async def _run_slice(self, records: Sequence[Any], checked: Sequence[Envelope | Rejected]) -> None:
        unhandled = self.subscription.unhandled
        emitted: list[asyncio.Future] = []
        token = pending_sends.set(emitted)  # what handlers emit is acknowledged before the offsets are committed
        try:
            async with contextlib.AsyncExitStack() as stack:
                unavailable = await self._open_scopes(stack)
                for record, envelope in zip(records, checked, strict=True):
                    if isinstance(envelope, Rejected):
                        rejection = Rejection.of(record, envelope.reason, envelope.detail)
                        await self.outcomes.dead_letter(rejection, self.policy)
                    elif self.outcomes.is_foreign(record, self.policy):
                        self.outcomes.state.metrics.record_outcome(record.topic, "skipped")
                    else:
                        await self._handle_one(record, envelope, unavailable)
                    unhandled[(record.topic, record.partition)] = record.offset + 1
        finally:
            pending_sends.reset(token)
        if self.outcomes.state.faults.crashes:  # crash tests only: the store committed, the offsets are not yet
            self.outcomes.state.faults.crash_point("batch_committed")
        if emitted:
            await self._acknowledged(emitted)

    async def _open_scopes(self, stack: contextlib.AsyncExitStack) -> Exception | None:
        """Opens the worker's batch scopes; the error if one cannot open (its database is down, say). Then each record
        fails with it and goes to its retry tier, as it would have failed alone, instead of the whole batch coming
        back at once and again while the database stays down."""
        for scope in list(self.scopes):
            try:
                await stack.enter_async_context(scope())
            except Exception as error:
                log.warning("batch_scope_unavailable", error_class=type(error).__name__, reason=str(error)[:300])
                return error
        return None

    async def _acknowledged(self, emitted: list[asyncio.Future]) -> None:
        """Every emitted record is on the broker before an offset is committed; one that is not sends the batch back."""
        outcomes = await asyncio.gather(*emitted, return_exceptions=True)
        failed = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
        if failed is not None:
            # Kafka refusing the worker (an ACL), or a producer stopped for good, stops the worker.
            self.outcomes.state.send_failed(failed, "publishing what its handler emitted")
            raise failed

    async def _handle_one(self, record: Any, envelope: Envelope, unavailable: Exception | None = None) -> None:
        topic = self.topics[record.topic]

        async def call() -> Any:
            # Decoded first: a value that is not a valid event is dead-lettered as such even while the store is down,
            # as it would be alone, rather than retried for a failure that is not its own.
            event = decode_keyed_value(topic, record.key, record.value)
            if unavailable is not None:
                raise unavailable
            return await self.handler(event)

        async def payload() -> Any:
            return decode_keyed_value(topic, record.key, record.value)

        await self.outcomes.run(record, envelope, self.policy, self.subscription, call, payload)

    async def _verify_all(self, records: Sequence[Any]) -> list[Envelope | Rejected]:
        if self.verify_threads == 0 or len(records) < PARALLEL_VERIFY_FROM:
            return self._verify_chunk(records)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.verify_threads, thread_name_prefix="fleet-verify")
        loop = asyncio.get_running_loop()
        size = -(-len(records) // self.verify_threads)
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
