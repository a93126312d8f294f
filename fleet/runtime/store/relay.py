"""The outbox relay: publishes what a store's transactions committed to their outbox, in order, at least once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from contracts.connection import KafkaConnection, client_options
from fleet.runtime.errors import stops_the_producer
from fleet.runtime.store.base import INBOX_RETENTION_S, OutboxRow, Store, now_ms

__all__ = ["OutboxRelay", "Producer"]

log = structlog.get_logger("fleet.runtime.store")


class Producer(Protocol):
    """What the relay needs of aiokafka's producer (and what a test's fake provides)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Awaitable[Any]: ...


class OutboxRelay:
    """Publishes committed outbox rows, in insertion order, at least once, each with its own ce_id and headers.

    `start()` runs it in the background. What a transaction of its store just committed reaches it in memory, and it
    publishes those rows at once, without reading them back; a producer batches them on the wire. It marks what the
    broker acknowledged later and together: in the next batch's transaction (`take_acknowledged`), or on its own after
    `mark_after_s`. It reads the outbox back only when it must: at start (what a crash left), after a failed send (the
    rows wait in the outbox, and go out again in insertion order), and every `poll_interval_s` for rows other
    processes left behind. A crash between publishing and marking publishes a row again; consumers drop the copy by its
    ce_id.
    """

    def __init__(
        self,
        store: Store,
        bootstrap_servers: str | KafkaConnection,
        client_id: str,
        *,
        producer: Producer | None = None,
        make_producer: Callable[[], Producer] | None = None,
        batch_size: int = 500,
        poll_interval_s: float = 30.0,
        mark_after_s: float = 1.0,
        settle_s: float = 10.0,
        linger_ms: int = 5,
        retention_s: float = 86_400.0,
        inbox_retention_s: float = INBOX_RETENTION_S,
        prune_every_s: float = 600.0,
        stop_timeout_s: float = 5.0,
        refresh: Callable[[OutboxRow], list[tuple[str, bytes]]] | None = None,
        refused: Callable[[BaseException], bool] | None = None,
        crash_point: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.crash_point = crash_point  # crash tests only (fleet.runtime.faults): once rows are out, before marking
        # Tells whether an error is Kafka refusing us (a password, an ACL):
        # then the worker stops instead of retrying forever.
        self.refused = refused
        # Gives the headers to send for a row read back: re-signs one that waited too long for the freshness window.
        self.refresh = refresh
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.mark_after_s = mark_after_s
        self.settle_s = settle_s
        self.linger_ms = linger_ms
        self.retention_s = retention_s
        self.inbox_retention_s = inbox_retention_s
        self.prune_every_s = prune_every_s
        self.stop_timeout_s = stop_timeout_s
        self._producer = producer
        # How a new producer is built when the last one cannot go on; None for an injected one (the caller's to close).
        self._make_producer = None if producer is not None else make_producer or self._aiokafka_producer
        self._producer_dead = False  # its sender stopped on an error it does not retry: every later send would fail too
        self._producer_started = False
        self._fresh: collections.deque[OutboxRow] = collections.deque()  # committed, handed over, not yet sent
        self._read_back = True  # the outbox may hold rows nobody handed over: read them back before the fresh ones
        self._acknowledged: list[int] = []  # published, not yet marked
        self._acknowledged_since: float | None = None
        self._next_read_back = 0.0  # the loop's clock: when the outbox is read back next
        self._settled_only = False  # the next read-back is the periodic one: rows older than `settle_s` only
        self._read_back_ids: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._ensure_producer()
        self._stopping = False
        self.store.on_committed_rows(self._hand_over)
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.client_id}")

    async def stop(self) -> None:
        """Publishes what is pending (for up to `stop_timeout_s`), marks it, then stops the task and the producer."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, self.stop_timeout_s)  # cancels the task when time runs out
            self._task = None
        self.store.forget(self._hand_over)
        if self._producer_started and self._producer is not None:
            await self._producer.stop()
            self._producer_started = False

    async def drain(self) -> int:
        """Publishes everything pending now, in insertion order, and marks it; returns how many rows the broker
        acknowledged."""
        await self._ensure_producer()
        self._read_back = True
        total = await self._read_back_all()
        if not self._read_back:  # read back to the end: now the rows handed over meanwhile, less those it sent
            total += await self._publish_fresh()
        await self.mark_acknowledged()
        return total

    def take_acknowledged(self) -> list[int]:
        """The ids published and not yet marked, for the caller to mark in its own transaction (`give_back` them if
        that transaction does not commit)."""
        ids, self._acknowledged, self._acknowledged_since = self._acknowledged, [], None
        return ids

    def give_back(self, ids: list[int]) -> None:
        if ids:
            self._acknowledged[:0] = ids
            self._acknowledged_since = self._acknowledged_since or asyncio.get_running_loop().time()

    async def mark_acknowledged(self) -> None:
        """Marks what was published, in a transaction of its own."""
        ids = self.take_acknowledged()
        if not ids:
            return
        try:
            async with self.store.transaction() as tx:
                await self.store.mark_published(tx, ids)
        except BaseException:
            self.give_back(ids)
            raise

    async def backlog(self) -> int:
        return await self.store.backlog()

    async def prune(self) -> int:
        """Deletes outbox rows published longer ago than `retention_s`,
        and inbox claims older than `inbox_retention_s`."""
        return await self.store.prune(self.retention_s, self.inbox_retention_s)

    async def __aenter__(self) -> OutboxRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _hand_over(self, rows: list[OutboxRow]) -> None:
        """A transaction of the store committed these rows: publish them next (after a read-back in progress, which
        may have sent some of them already: those are skipped). No rows: the store's relays read committed rows back
        (PostgreSQL), so read back now."""
        if rows:
            self._fresh.extend(rows)
        else:
            self._read_back = True
        self._wake.set()

    def _aiokafka_producer(self) -> Producer:
        from aiokafka import AIOKafkaProducer

        # Built once a loop runs, not in __init__: aiokafka binds the running loop. Idempotent with acks=all, like every
        # producer of the fleet: a row is marked only once all in-sync replicas have it.
        # linger_ms: the rows of a batch go out in a few requests, not one each.
        return AIOKafkaProducer(
            **client_options(self.bootstrap_servers),
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
        )

    async def _ensure_producer(self) -> None:
        if self._producer_dead:
            await self._drop_producer()
        if self._producer is None:
            assert self._make_producer is not None  # it is None only beside an injected producer, which stays
            self._producer = self._make_producer()
        if not self._producer_started:
            try:
                await self._producer.start()
            except BaseException:
                await self._drop_producer()  # a stopped producer cannot start again: the next pass builds a new one
                raise
            self._producer_started = True

    async def _drop_producer(self) -> None:
        """Closes the producer and forgets it, so that the next pass builds a new one (an injected one is kept)."""
        self._producer_dead = False
        if self._make_producer is None:
            return
        producer, self._producer, self._producer_started = self._producer, None, False
        if producer is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):  # a wedged producer may never finish stopping
                await asyncio.wait_for(producer.stop(), self.stop_timeout_s)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while not self._stopping:
            await self._guarded(self._pass)
            if loop.time() >= next_prune:
                await self._guarded(self.prune)
                next_prune = loop.time() + self.prune_every_s
            await self._nap()
        await self._guarded(self._pass)  # what the last transactions committed before stop()
        await self._guarded(self.mark_acknowledged)

    async def _pass(self) -> int:
        await self._ensure_producer()
        if self._read_back:
            return await self._read_back_all()
        return await self._publish_fresh()

    async def _publish_fresh(self) -> int:
        published = 0
        while self._fresh:
            rows = [self._fresh.popleft() for _ in range(min(len(self._fresh), self.batch_size))]
            rows = [row for row in rows if row.id not in self._read_back_ids]
            if not rows:
                continue
            acknowledged = await self._publish(rows, refresh=False)
            self._acknowledged_now(acknowledged)
            published += len(acknowledged)
            if len(acknowledged) < len(rows):  # the rest wait in the outbox: read back, they go out in their order
                self.store.release([row.id for row in rows if row.id not in set(acknowledged)])
                self.store.release([row.id for row in self._fresh])
                self._fresh.clear()
                self._read_back = True
                break
        return published

    async def _read_back_all(self) -> int:
        # A periodic read-back looks for what other processes or a crash left: rows added lately may be in a relay's
        # hands right now (handed over, published, not yet marked), and would go out twice.
        settled = None if not self._settled_only else now_ms() - int(self.settle_s * 1000)
        self._read_back_ids.clear()  # what this read-back publishes, so that the same rows handed over are skipped
        total = 0
        while True:
            published, all_sent = await self._publish_batch(settled)
            total += published
            if not all_sent:  # the broker refuses: the next pass reads back again
                return total
            if not published:
                self._read_back = self._settled_only = False  # caught up: what is committed now comes in memory
                return total

    def _acknowledged_now(self, ids: list[int]) -> None:
        if ids:
            self._acknowledged.extend(ids)
            self._acknowledged_since = self._acknowledged_since or asyncio.get_running_loop().time()

    async def _guarded(self, work: Callable[[], Awaitable[int | None]]) -> None:
        # The loop outlives a database or broker outage: it logs, and the next pass tries again.
        try:
            await work()
        except Exception as error:
            self._read_back = True  # what was handed over may not be out: read it back next time
            if self.refused is not None and self.refused(error):
                return  # reported once by `refused`; the rows wait in the outbox until an operator fixes the ACL
            log.warning(
                "outbox_relay_failed",
                work=getattr(work, "__name__", str(work)),
                error=f"{type(error).__name__}: {error}",
                client_id=self.client_id,
            )

    async def _nap(self) -> None:
        """Until rows are handed over, or acknowledged rows are due to be marked (no batch came to mark them), or it is
        time to read the outbox back: after a failed pass, in a second; else every `poll_interval_s`, for what other
        processes or a crash left behind."""
        loop = asyncio.get_running_loop()
        if self._fresh:
            return
        now = loop.time()
        if self._read_back:
            self._next_read_back = min(self._next_read_back, now + 1.0)
        elif self._next_read_back <= now:
            self._next_read_back = now + self.poll_interval_s
        due = [self._next_read_back]
        if self._acknowledged_since is not None:
            due.append(self._acknowledged_since + self.mark_after_s)
        if (timeout := min(due) - now) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()  # a hand-over after this leaves rows in `_fresh`, which the next nap sees first
        now = loop.time()
        if self._acknowledged_since is not None and now >= self._acknowledged_since + self.mark_after_s:
            await self._guarded(self.mark_acknowledged)
        if now >= self._next_read_back:
            self._settled_only = not self._read_back  # a failed pass reads everything back; the poll, settled rows
            self._read_back = True
            self._next_read_back = now + self.poll_interval_s

    async def _publish_batch(self, created_before_ms: int | None = None) -> tuple[int, bool]:
        async with self.store.pending(self.batch_size, created_before_ms) as batch:
            if not batch.rows:
                return 0, True
            acknowledged = await self._publish(batch.rows, refresh=True)
            if acknowledged:
                await batch.mark(acknowledged)
                self._read_back_ids.update(acknowledged)
        log.debug("outbox_published", count=len(acknowledged), pending_in_batch=len(batch.rows) - len(acknowledged))
        return len(acknowledged), len(acknowledged) == len(batch.rows)

    async def _publish(self, rows: list[OutboxRow], *, refresh: bool) -> list[int]:
        """Sends the rows in order (batched on the wire), then waits; returns the ids the broker acknowledged. Rows
        read back may have waited: `refresh` re-signs the stale ones (fresh rows were signed a moment ago)."""
        producer = self._producer
        assert producer is not None  # drain() made sure of it
        deliveries = []
        for row in rows:
            try:
                headers = self.refresh(row) if refresh and self.refresh else row.headers
                delivery = await producer.send(row.topic, value=row.value, key=row.key.encode("utf-8"), headers=headers)
            except Exception as error:
                self._log_failure(row, error)
                break  # later rows may share this row's key: they wait, so a key's order holds
            deliveries.append((row, delivery))
        acknowledged = []
        for row, delivery in deliveries:
            try:
                await delivery
                acknowledged.append(row.id)
            except Exception as error:
                self._log_failure(row, error)
        if acknowledged and self.crash_point is not None:
            self.crash_point("outbox_published")
        return acknowledged

    def _log_failure(self, row: OutboxRow, error: Exception) -> None:
        if self.refused is not None and self.refused(error):
            return
        if stops_the_producer(error):
            self._producer_dead = True
        log.warning("outbox_send_failed", ce_id=row.ce_id, topic=row.topic, error=f"{type(error).__name__}: {error}")
