"""A service's transactional state: an inbox (effects exactly once), an outbox and its relay, on SQLite or PostgreSQL."""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import functools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol, Sequence

import structlog

from contracts import Record
from contracts.connection import KafkaConnection, client_options
from fleet.runtime.errors import stops_the_producer

__all__ = [
    "DuplicateOutboxEvent",
    "OutboxBatch",
    "OutboxRelay",
    "OutboxRow",
    "Producer",
    "Store",
    "Transaction",
    "open_store",
    "to_pyformat",
]

log = structlog.get_logger("fleet.runtime.store")

# The store's own tables, one template for both dialects (see `_DIALECTS` for the blanks).
OWN_TABLES = (
    """CREATE TABLE IF NOT EXISTS inbox (
        group_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        claimed_at BIGINT NOT NULL,
        PRIMARY KEY (group_id, event_id)
    )""",
    """CREATE TABLE IF NOT EXISTS outbox (
        id {id_column},
        ce_id TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL,
        key TEXT NOT NULL,
        value {blob} NOT NULL,
        headers TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        published_at BIGINT
    )""",
    # The relay reads pending rows in id order, per key (the PostgreSQL relay's "no earlier row of this key" check).
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE published_at IS NULL",
    "CREATE INDEX IF NOT EXISTS outbox_pending_by_key ON outbox (topic, key, id) WHERE published_at IS NULL",
    # Pruning finds old published rows without reading the pending ones.
    "CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL",
)
_DIALECTS = {
    # INTEGER PRIMARY KEY is SQLite's rowid: it grows with each insert, which is the order the relay publishes in.
    "sqlite": {"id_column": "INTEGER PRIMARY KEY", "blob": "BLOB"},
    "postgresql": {"id_column": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "blob": "BYTEA"},
}

CLAIM = "INSERT INTO inbox (group_id, event_id, claimed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
ADD_TO_OUTBOX = (
    "INSERT INTO outbox (ce_id, topic, key, value, headers, created_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (ce_id) DO NOTHING"
)
PENDING_COLUMNS = (
    "SELECT o.id, o.ce_id, o.topic, o.key, o.value, o.headers FROM outbox AS o WHERE o.published_at IS NULL"
)
BACKLOG = "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"
PRUNE = "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at <= ?"
PRUNE_INBOX = "DELETE FROM inbox WHERE claimed_at <= ?"


# An inbox claim must outlive every way its event can come back: the topic's retention (7 days), retries (minutes) and a
# replay from the dead-letter topic (kept 30 days). After that, a service's own keys (one charge per order) still hold.
INBOX_RETENTION_S = 35 * 86_400.0


class DuplicateOutboxEvent(ValueError):
    """A record whose ce_id is in the outbox already: two different events never share an id, so this is a bug."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# A quoted literal or identifier (kept whole), a `?` placeholder, or a `%` (psycopg's own placeholder character).
_SQL_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """`?` placeholders as psycopg's `%s`, and every literal `%` doubled; a `?` inside quotes stays a `?`."""

    def swap(token: re.Match) -> str:
        text = token.group(0)
        return "%s" if text == "?" else text.replace("%", "%%")

    return _SQL_TOKENS.sub(swap, sql)


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    """Raw Kafka headers as JSON text: order, repeats and every byte kept (values in base64)."""
    return json.dumps([[name, base64.b64encode(value).decode("ascii")] for name, value in headers])


def decode_headers(text: str) -> list[tuple[str, bytes]]:
    return [(name, base64.b64decode(value)) for name, value in json.loads(text)]


@dataclass(frozen=True)
class OutboxRow:
    """One record waiting in the outbox, exactly as it will go on the wire."""

    id: int
    ce_id: str
    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> OutboxRow:
        id_, ce_id, topic, key, value, headers = row
        return cls(id_, ce_id, topic, key, bytes(value), decode_headers(headers))


@dataclass(frozen=True)
class OutboxBatch:
    """Pending rows handed to one relay; `mark(ids)` records the ones the broker acknowledged."""

    rows: list[OutboxRow]
    mark: Callable[[list[int]], Awaitable[None]]


class Transaction:
    """One database transaction: claims, state changes and outbox rows commit together or not at all."""

    def __init__(self, connection: Any, dialect: str) -> None:
        self._connection = connection  # an aiosqlite or psycopg connection: both have `await execute(sql, params)`
        self.dialect = dialect
        self.added_to_outbox = 0

    async def claim(self, group: str, event_id: str) -> bool:
        """Records that `group` handles `event_id`; False when it did already, so the caller skips its effects.

        On PostgreSQL a competing claim of the same event waits until the first transaction ends, then gets False
        (or True if that transaction rolled back). Claim first: a duplicate then does no work, and waits before anything else.
        """
        return await self.execute(CLAIM, (group, event_id, now_ms())) == 1

    async def add_to_outbox(self, record: Record) -> None:
        """Queues a record for the relay; it is published only if this transaction commits."""
        params = (
            record.envelope.id,
            record.topic,
            record.key,
            record.value,
            encode_headers(record.raw_headers()),
            now_ms(),
        )
        if await self.execute(ADD_TO_OUTBOX, params) != 1:
            raise DuplicateOutboxEvent(f"ce_id {record.envelope.id} is in the outbox already")
        self.added_to_outbox += 1

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Runs one statement with `?` placeholders; returns the number of rows it changed."""
        async with self._cursor(sql, params) as cursor:
            return cursor.rowcount

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        async with self._cursor(sql, params) as cursor:
            row = await cursor.fetchone()
        return tuple(row) if row is not None else None

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        async with self._cursor(sql, params) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    @contextlib.asynccontextmanager
    async def _cursor(self, sql: str, params: Sequence[Any]) -> AsyncIterator[Any]:
        text = to_pyformat(sql) if self.dialect == "postgresql" else sql
        cursor = await self._connection.execute(text, tuple(params))
        try:
            yield cursor
        finally:
            await cursor.close()


class Store(abc.ABC):
    """A service's database: `async with store.transaction() as tx: ...`, plus what its outbox relay needs."""

    dialect: str

    def __init__(self, url: str) -> None:
        self.url = url
        self._wakers: set[asyncio.Event] = set()  # one per running relay of this store

    async def migrate(self, statements: Sequence[str]) -> None:
        """Applies a service's own DDL in one transaction; write it idempotent (`CREATE TABLE IF NOT EXISTS ...`)."""
        async with self._begin(migrating=True) as tx:
            for statement in statements:
                await tx.execute(statement)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Commits when the block ends, rolls back when it raises; relays wake once it has committed outbox rows."""
        async with self._begin() as tx:
            yield tx
        if tx.added_to_outbox:
            for wake in self._wakers:
                wake.set()

    async def backlog(self) -> int:
        """How many outbox rows wait to be published."""
        async with self._begin() as tx:
            row = await tx.fetchone(BACKLOG)
        return int(row[0])

    async def prune(self, older_than_s: float, inbox_older_than_s: float | None = None) -> int:
        """Deletes outbox rows published more than `older_than_s` ago, and inbox claims older than `inbox_older_than_s`
        (if given); returns how many outbox rows went."""
        async with self._begin() as tx:
            if inbox_older_than_s is not None:
                await tx.execute(PRUNE_INBOX, (now_ms() - int(inbox_older_than_s * 1000),))
            return await tx.execute(PRUNE, (now_ms() - int(older_than_s * 1000),))

    def subscribe(self, wake: asyncio.Event) -> None:
        self._wakers.add(wake)

    def unsubscribe(self, wake: asyncio.Event) -> None:
        self._wakers.discard(wake)

    async def _create_own_tables(self) -> None:
        await self.migrate([statement.format(**_DIALECTS[self.dialect]) for statement in OWN_TABLES])

    @abc.abstractmethod
    def pending(self, limit: int) -> contextlib.AbstractAsyncContextManager[OutboxBatch]:
        """Up to `limit` pending rows, in id order, that no other relay of this database is publishing now."""

    @abc.abstractmethod
    def _begin(self, migrating: bool = False) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """One database transaction, without waking relays."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class SqliteStore(Store):
    """One file, one writer at a time: every transaction takes the write lock at BEGIN (IMMEDIATE), so none fails late."""

    dialect = "sqlite"

    def __init__(self, url: str, connection: Any) -> None:
        super().__init__(url)
        self._connection = connection
        # One connection serves the whole process, so its transactions take turns; BEGIN IMMEDIATE and busy_timeout
        # make another process (a CLI, a second replica by mistake) wait for the file's write lock instead of failing.
        self._lock = asyncio.Lock()
        self._relay_lock = asyncio.Lock()  # the relays of this store take turns: none publishes a row another holds

    @classmethod
    async def open(cls, url: str, path: str) -> SqliteStore:
        import aiosqlite  # imported late: a PostgreSQL service does not need it

        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path, isolation_level=None)  # no implicit transactions: we BEGIN ourselves
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "busy_timeout = 5000", "foreign_keys = ON"):
            # WAL: readers never block the writer. FULL: a committed claim survives a power cut, not only a crash.
            await connection.execute(f"PRAGMA {pragma}")
        return cls(url, connection)

    @contextlib.asynccontextmanager
    async def _begin(self, migrating: bool = False) -> AsyncIterator[Transaction]:
        async with self._lock:
            await self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self._connection, self.dialect)
                await self._connection.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:  # a failed COMMIT leaves the transaction open too
                    await self._connection.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def pending(self, limit: int) -> AsyncIterator[OutboxBatch]:
        # Rows are read and marked in two short transactions, not one held while Kafka answers: a slow or absent
        # broker must not hold the file's write lock, which every handler's transaction needs.
        async with self._relay_lock:
            async with self._begin() as tx:
                rows = await tx.fetchall(f"{PENDING_COLUMNS} ORDER BY o.id LIMIT ?", (limit,))
            yield OutboxBatch([OutboxRow.from_row(row) for row in rows], self._mark)

    async def _mark(self, ids: list[int]) -> None:
        async with self._begin() as tx:
            sql = "UPDATE outbox SET published_at = ? WHERE id IN (SELECT value FROM json_each(?))"
            await tx.execute(sql, (now_ms(), json.dumps(ids)))

    async def close(self) -> None:
        await self._connection.close()


class PostgresStore(Store):
    """A pool of connections, so replicas and concurrent handlers run their transactions side by side."""

    dialect = "postgresql"
    # Serialises `migrate` across replicas: concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL's catalog.
    MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('eventfleet.store.migrate'))"
    # No earlier pending row of the same key: with several relays, a key's records still go out in insertion order.
    PENDING = (
        f"{PENDING_COLUMNS} AND NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.published_at IS NULL "
        "AND e.topic = o.topic AND e.key = o.key AND e.id < o.id) ORDER BY o.id LIMIT ? FOR UPDATE SKIP LOCKED"
    )

    def __init__(self, url: str, pool: Any) -> None:
        super().__init__(url)
        self._pool = pool

    @classmethod
    async def open(cls, url: str, pool_size: int, wait_s: float = 5.0) -> PostgresStore:
        from psycopg_pool import AsyncConnectionPool  # imported late: an SQLite service does not need it

        # autocommit: nothing runs outside `conn.transaction()` blocks, which BEGIN and COMMIT themselves.
        # timeout: a handler waits at most `wait_s` for a connection (psycopg's default is 30 s). While the database is
        # down it then fails like any dependency error, and its record goes to the retry tier instead of holding every
        # partition of the consumer for as long as the outage lasts.
        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            open=False,
            check=AsyncConnectionPool.check_connection,
            name="eventfleet-store",
            timeout=wait_s,
        )
        await pool.open(wait=True, timeout=10.0)
        return cls(url, pool)

    @contextlib.asynccontextmanager
    async def _begin(self, migrating: bool = False) -> AsyncIterator[Transaction]:
        # READ COMMITTED (the default): a claim that meets a competitor's uncommitted claim waits for it, then
        # sees the outcome (ON CONFLICT DO NOTHING), so one wins and no transaction needs retrying.
        async with self._pool.connection() as connection, connection.transaction():
            tx = Transaction(connection, self.dialect)
            if migrating:
                await tx.execute(self.MIGRATE_LOCK)
            yield tx

    @contextlib.asynccontextmanager
    async def pending(self, limit: int) -> AsyncIterator[OutboxBatch]:
        # The row locks last until the marks commit: other relays skip these rows instead of publishing them too.
        async with self._begin() as tx:
            rows = await tx.fetchall(self.PENDING, (limit,))

            async def mark(ids: list[int]) -> None:
                await tx.execute("UPDATE outbox SET published_at = ? WHERE id = ANY(?)", (now_ms(), ids))

            yield OutboxBatch([OutboxRow.from_row(row) for row in rows], mark)

    async def close(self) -> None:
        await self._pool.close()


async def open_store(url: str, *, pool_size: int = 10, wait_s: float = 5.0) -> Store:
    """`sqlite:///relative/file.db`, `sqlite:////absolute/file.db` or `postgresql://user@host:port/db`, with the
    store's own inbox and outbox tables created; `pool_size` bounds PostgreSQL connections, `wait_s` how long a
    transaction waits for one."""
    if url.startswith("sqlite:///"):
        store: Store = await SqliteStore.open(url, url.removeprefix("sqlite:///"))
    elif url.startswith(("postgresql://", "postgres://")):
        store = await PostgresStore.open(url, pool_size, wait_s)
    else:
        raise ValueError(
            f"unsupported store URL {url!r}: use sqlite:///path/to/file.db or postgresql://user@host:port/db"
        )
    try:
        await store._create_own_tables()
    except BaseException:
        await store.close()  # a connection or pool left open would keep the process (and the server) busy
        raise
    return store


class Producer(Protocol):
    """What the relay needs of aiokafka's producer (and what a test's fake provides)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Awaitable[Any]: ...


class OutboxRelay:
    """Publishes committed outbox rows, in insertion order, at least once, each with its own ce_id and headers.

    `start()` runs it in the background: it wakes when a transaction of its store commits outbox rows, and every
    `poll_interval_s` for rows other processes added. A crash between publishing and marking publishes a row again.
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
        poll_interval_s: float = 0.5,
        retention_s: float = 86_400.0,
        inbox_retention_s: float = INBOX_RETENTION_S,
        prune_every_s: float = 600.0,
        stop_timeout_s: float = 5.0,
        refresh: Callable[[OutboxRow], list[tuple[str, bytes]]] | None = None,
        refused: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.store = store
        # Tells whether an error is Kafka refusing us (a password, an ACL): then the worker stops instead of retrying forever.
        self.refused = refused
        # Gives the headers to send for a row: re-signs a row that waited too long for the freshness window.
        self.refresh = refresh
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.retention_s = retention_s
        self.inbox_retention_s = inbox_retention_s
        self.prune_every_s = prune_every_s
        self.stop_timeout_s = stop_timeout_s
        self._producer = producer
        # How a new producer is built when the last one cannot go on; None for an injected one (the caller's to close).
        self._make_producer = None if producer is not None else make_producer or self._aiokafka_producer
        self._producer_dead = False  # its sender stopped on an error it does not retry: every later send would fail too
        self._producer_started = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._ensure_producer()
        self._stopping = False
        self.store.subscribe(self._wake)
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.client_id}")

    async def stop(self) -> None:
        """Publishes what is pending (for up to `stop_timeout_s`), then stops the task and the producer."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, self.stop_timeout_s)  # cancels the task when time runs out
            self._task = None
        self.store.unsubscribe(self._wake)
        if self._producer_started:
            await self._producer.stop()
            self._producer_started = False

    async def drain(self) -> int:
        """Publishes everything pending now; returns how many rows the broker acknowledged."""
        await self._ensure_producer()
        total = 0
        while True:
            published, all_sent = await self._publish_batch()
            total += published
            if not published or not all_sent:  # nothing left, or the broker refuses: the next pass tries again
                return total

    async def backlog(self) -> int:
        return await self.store.backlog()

    async def prune(self) -> int:
        """Deletes outbox rows published longer ago than `retention_s`, and inbox claims older than `inbox_retention_s`."""
        return await self.store.prune(self.retention_s, self.inbox_retention_s)

    async def __aenter__(self) -> OutboxRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _aiokafka_producer(self) -> Producer:
        from aiokafka import AIOKafkaProducer

        # Built once a loop runs, not in __init__: aiokafka binds the running loop. Idempotent with acks=all, like every
        # producer of the fleet: a row is marked only once all in-sync replicas have it.
        return AIOKafkaProducer(
            **client_options(self.bootstrap_servers), client_id=self.client_id, acks="all", enable_idempotence=True
        )

    async def _ensure_producer(self) -> None:
        if self._producer_dead:
            await self._drop_producer()
        if self._producer is None:
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
            await self._pass()
            if loop.time() >= next_prune:
                await self._guarded(self.prune)
                next_prune = loop.time() + self.prune_every_s
            await self._nap()
        await self._pass()  # what the last transactions committed before stop()

    async def _pass(self) -> None:
        await self._guarded(self.drain)

    async def _guarded(self, work: Callable[[], Awaitable[int]]) -> None:
        # The loop outlives a database or broker outage: it logs, and the next pass tries again.
        try:
            await work()
        except Exception as error:
            if self.refused is not None and self.refused(error):
                return  # reported once by `refused`; the rows wait in the outbox until an operator fixes the ACL
            log.warning(
                "outbox_relay_failed",
                work=work.__name__,
                error=f"{type(error).__name__}: {error}",
                client_id=self.client_id,
            )

    async def _nap(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
        self._wake.clear()  # a wake-up that lands after this is caught by the pass that follows anyway

    async def _publish_batch(self) -> tuple[int, bool]:
        async with self.store.pending(self.batch_size) as batch:
            if not batch.rows:
                return 0, True
            acknowledged = await self._publish(batch.rows)
            if acknowledged:
                await batch.mark(acknowledged)
        log.debug("outbox_published", count=len(acknowledged), pending_in_batch=len(batch.rows) - len(acknowledged))
        return len(acknowledged), len(acknowledged) == len(batch.rows)

    async def _publish(self, rows: list[OutboxRow]) -> list[int]:
        """Sends the rows in order (batched on the wire), then waits; returns the ids the broker acknowledged."""
        deliveries = []
        for row in rows:
            try:
                headers = self.refresh(row) if self.refresh else row.headers
                delivery = await self._producer.send(
                    row.topic, value=row.value, key=row.key.encode("utf-8"), headers=headers
                )
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
        return acknowledged

    def _log_failure(self, row: OutboxRow, error: Exception) -> None:
        if self.refused is not None and self.refused(error):
            return
        if stops_the_producer(error):
            self._producer_dead = True
        log.warning("outbox_send_failed", ce_id=row.ce_id, topic=row.topic, error=f"{type(error).__name__}: {error}")
