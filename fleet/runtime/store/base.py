"""The store's common part: its tables (inbox, outbox), one transaction's statements, what every backend provides."""

from __future__ import annotations

import abc
import base64
import contextlib
import contextvars
import functools
import json
import re
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Protocol, Sequence

import orjson

from contracts import Record

__all__ = [
    "INBOX_RETENTION_S",
    "DuplicateOutboxEvent",
    "OutboxBatch",
    "OutboxRow",
    "Statements",
    "Store",
    "Transaction",
    "decode_headers",
    "encode_headers",
    "now_ms",
    "to_pyformat",
]

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
    "ON CONFLICT (ce_id) DO NOTHING RETURNING id"
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
    return orjson.dumps([[name, base64.b64encode(value).decode("ascii")] for name, value in headers]).decode()


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

    @classmethod
    def of(cls, id_: int, record: Record) -> OutboxRow:
        """The row a transaction just added for `record`, without reading it back."""
        return cls(id_, record.envelope.id, record.topic, record.key, record.value, record.raw_headers())


@dataclass(frozen=True)
class OutboxBatch:
    """Pending rows handed to one relay; `mark(ids)` records the ones the broker acknowledged."""

    rows: list[OutboxRow]
    mark: Callable[[list[int]], Awaitable[None]]


class Statements(Protocol):
    """How one backend runs a statement with `?` placeholders inside an open transaction."""

    async def run(self, sql: str, params: Sequence[Any]) -> int: ...  # rows changed

    async def one(self, sql: str, params: Sequence[Any]) -> tuple | None: ...

    async def all(self, sql: str, params: Sequence[Any]) -> list[tuple]: ...


class Transaction:
    """One database transaction: claims, state changes and outbox rows commit together or not at all.

    Inside a batch (`Store.batch`), each handler's `store.transaction()` is a savepoint of the batch's transaction: a
    handler that raises undoes only its own work (its claim, its changes, its outbox rows), and the batch commits once.
    """

    def __init__(self, statements: Statements, dialect: str) -> None:
        self._statements = statements
        self.dialect = dialect
        self.outbox: list[OutboxRow] = []  # rows added and not undone, as they go on the wire, in insertion order
        self._after_commit: list[Callable[[], Any]] = []

    @property
    def added_to_outbox(self) -> int:
        return len(self.outbox)

    async def claim(self, group: str, event_id: str) -> bool:
        """Records that `group` handles `event_id`; False when it did already, so the caller skips its effects.

        On PostgreSQL a competing claim of the same event waits until the first transaction ends, then gets False
        (or True if that transaction rolled back). Claim first: a duplicate then waits before anything else, and does
        no work.
        """
        return await self.execute(CLAIM, (group, event_id, now_ms())) == 1

    async def add_to_outbox(self, record: Record) -> None:
        """Queues a record for the relay; it is published only if this transaction commits."""
        headers = record.raw_headers()
        params = (record.envelope.id, record.topic, record.key, record.value, encode_headers(headers), now_ms())
        added = await self.fetchone(ADD_TO_OUTBOX, params)
        if added is None:
            raise DuplicateOutboxEvent(f"ce_id {record.envelope.id} is in the outbox already")
        self.outbox.append(
            OutboxRow(int(added[0]), record.envelope.id, record.topic, record.key, record.value, headers)
        )

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Runs `callback` once the transaction has committed (inside a batch: once the batch has), never if it rolls
        back. Callbacks run in the order they were added; equal ones (the same bound method) run once, at the last
        place they were added, so a handler may add a flush for each event and the batch flushes once."""
        self._after_commit.append(callback)

    def run_after_commit(self) -> None:
        """Called by the store once the transaction committed."""
        callbacks, self._after_commit = self._after_commit, []
        last = {callback: index for index, callback in enumerate(callbacks)}
        for index, callback in enumerate(callbacks):
            if last[callback] == index:
                callback()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Runs one statement with `?` placeholders; returns the number of rows it changed."""
        return await self._statements.run(sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return await self._statements.one(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return await self._statements.all(sql, params)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[Transaction]:
        """A nested part of this transaction, undone alone (its outbox rows and callbacks too) when the block raises."""
        # One name for every savepoint: a nested one shadows it, and ROLLBACK TO / RELEASE act on the innermost. A new
        # name each time would be a new statement each time, compiled anew and pushing the others out of SQLite's cache.
        name = "fleet_handler"
        outbox, callbacks = len(self.outbox), len(self._after_commit)
        await self.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            await self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            await self.execute(f"RELEASE SAVEPOINT {name}")
            del self.outbox[outbox:], self._after_commit[callbacks:]
            raise
        await self.execute(f"RELEASE SAVEPOINT {name}")


# The batch transaction of the records being handled, if any: `store.transaction()` inside it is a savepoint of it.
_BATCH: contextvars.ContextVar[tuple[Store, Transaction] | None] = contextvars.ContextVar("fleet_batch", default=None)


class Store(abc.ABC):
    """A service's database: `async with store.transaction() as tx: ...`, plus what its outbox relay needs."""

    dialect: str

    def __init__(self, url: str) -> None:
        self.url = url
        # Told of the outbox rows each transaction committed, in order: the relay publishes them without reading back.
        self._committed_rows: list[Callable[[list[OutboxRow]], None]] = []
        self._in_hand: set[int] = set()  # ids handed to a relay and not yet marked: a read-back leaves them alone

    async def migrate(self, statements: Sequence[str]) -> None:
        """Applies a service's own DDL in one transaction; write it idempotent (`CREATE TABLE IF NOT EXISTS ...`)."""
        async with self._begin(migrating=True) as tx:
            for statement in statements:
                await tx.execute(statement)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Commits when the block ends, rolls back when it raises; its outbox rows then go to the relay.

        Inside `batch()` it is a savepoint of the batch's transaction instead, which commits once for the batch."""
        batch = _BATCH.get()
        if batch is not None and batch[0] is self:
            async with batch[1].savepoint() as tx:
                yield tx
            return
        async with self._begin() as tx:
            yield tx
        self._after(tx)

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[Transaction]:
        """One transaction for a batch of records: every `transaction()` opened inside the block (in this task) is a
        savepoint of it, and it commits once, syncing to disk once, when the block ends."""
        async with self._begin() as tx:
            token = _BATCH.set((self, tx))
            try:
                yield tx
            finally:
                _BATCH.reset(token)
        self._after(tx)

    # Whether committed rows go to the relay in memory. PostgreSQL's do not: several replicas' relays share its outbox,
    # and a relay takes rows by reading them back with row locks (FOR UPDATE SKIP LOCKED), so no two publish one row;
    # a commit only wakes it, and it reads the outbox back once per batch, not once per event.
    hands_over = True

    def _after(self, tx: Transaction) -> None:
        if tx.outbox and self._committed_rows:
            rows = list(tx.outbox) if self.hands_over else []
            self._in_hand.update(row.id for row in rows)
            # To one relay only: the others of this store take rows as they read the outbox back, never one in hand.
            self._committed_rows[0](rows)
        tx.run_after_commit()

    def release(self, ids: Iterable[int]) -> None:
        """Rows a relay was given and will not publish after all (a send failed): reading back may take them."""
        self._in_hand.difference_update(ids)

    def on_committed_rows(self, callback: Callable[[list[OutboxRow]], None]) -> None:
        """`callback(rows)` after each commit that added outbox rows (the relay's way in; the first one registered)."""
        self._committed_rows.append(callback)

    def forget(self, callback: Callable[[list[OutboxRow]], None]) -> None:
        with contextlib.suppress(ValueError):
            self._committed_rows.remove(callback)

    async def backlog(self) -> int:
        """How many outbox rows wait to be published."""
        async with self._begin() as tx:
            row = await tx.fetchone(BACKLOG)
        assert row is not None  # count(*) answers one row
        return int(row[0])

    async def prune(self, older_than_s: float, inbox_older_than_s: float | None = None) -> int:
        """Deletes outbox rows published more than `older_than_s` ago, and inbox claims older than `inbox_older_than_s`
        (if given); returns how many outbox rows went."""
        async with self._begin() as tx:
            if inbox_older_than_s is not None:
                await tx.execute(PRUNE_INBOX, (now_ms() - int(inbox_older_than_s * 1000),))
            return await tx.execute(PRUNE, (now_ms() - int(older_than_s * 1000),))

    async def _create_own_tables(self) -> None:
        await self.migrate([statement.format(**_DIALECTS[self.dialect]) for statement in OWN_TABLES])

    @abc.abstractmethod
    def pending(
        self, limit: int, created_before_ms: int | None = None
    ) -> contextlib.AbstractAsyncContextManager[OutboxBatch]:
        """Up to `limit` pending rows, in id order, that no other relay of this database is publishing now (and, given
        `created_before_ms`, none added since: a relay may be publishing those from memory)."""

    @abc.abstractmethod
    async def mark_published(self, tx: Transaction, ids: Sequence[int]) -> None:
        """Marks these outbox rows published, in `tx` (one statement, whatever the count)."""

    @abc.abstractmethod
    def _begin(self, migrating: bool = False) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """One database transaction, without telling the relay."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
