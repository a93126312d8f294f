"""The store on PostgreSQL: a pool of connections, so several replicas share one database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fleet.runtime.store.base import PENDING_COLUMNS, OutboxBatch, OutboxRow, Store, Transaction, now_ms, to_pyformat

__all__ = ["PostgresStore", "StoreConnectionLost"]


class StoreConnectionLost(ConnectionError):
    """A transaction's connection broke before it committed: nothing of it is durable, so its records come again."""


class _OverTheConnection:
    """Runs statements on one psycopg connection: a round trip each (psycopg wants `%s` placeholders)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def run(self, sql: str, params: Sequence[Any]) -> int:
        cursor = await self._connection.execute(to_pyformat(sql), tuple(params))
        try:
            return int(cursor.rowcount)
        finally:
            await cursor.close()

    async def one(self, sql: str, params: Sequence[Any]) -> tuple | None:
        cursor = await self._connection.execute(to_pyformat(sql), tuple(params))
        try:
            row = await cursor.fetchone()
        finally:
            await cursor.close()
        return tuple(row) if row is not None else None

    async def all(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        cursor = await self._connection.execute(to_pyformat(sql), tuple(params))
        try:
            return [tuple(row) for row in await cursor.fetchall()]
        finally:
            await cursor.close()


class PostgresStore(Store):
    """A pool of connections, so replicas and concurrent handlers run their transactions side by side."""

    dialect = "postgresql"
    hands_over = False  # its relays read committed rows back under row locks (Store.hands_over)
    # Serialises `migrate` across replicas: concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL's catalog.
    MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('eventfleet.store.migrate'))"
    # No earlier pending row of the same key: with several relays, a key's records still go out in insertion order.
    PENDING = (
        f"{PENDING_COLUMNS} AND NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.published_at IS NULL "
        "AND e.topic = o.topic AND e.key = o.key AND e.id < o.id){age} ORDER BY o.id LIMIT ? FOR UPDATE SKIP LOCKED"
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
        async with self._pool.connection() as connection:
            async with connection.transaction():
                tx = Transaction(_OverTheConnection(connection), self.dialect)
                if migrating:
                    await tx.execute(self.MIGRATE_LOCK)
                yield tx
            # psycopg's transaction block ends without a word when its connection broke (the database stopped): it
            # neither commits nor raises. A batch whose last handler's savepoint failed that way, and went to its retry
            # tier, would then have its offsets committed while the batch's earlier effects were never committed (found
            # by make chaos, dependency_outage). Raising sends the batch back; the inbox makes what did commit a no-op.
            if connection.broken:
                raise StoreConnectionLost("the database connection broke before the transaction committed")

    @contextlib.asynccontextmanager
    async def pending(self, limit: int, created_before_ms: int | None = None) -> AsyncIterator[OutboxBatch]:
        # The row locks last until the marks commit: other relays skip these rows instead of publishing them too.
        params: tuple[int, ...] = (limit,) if created_before_ms is None else (created_before_ms, limit)
        sql = self.PENDING.format(age="" if created_before_ms is None else " AND o.created_at <= ?")
        async with self._begin() as tx:
            rows = await tx.fetchall(sql, params)

            async def mark(ids: list[int]) -> None:
                await self.mark_published(tx, ids)

            yield OutboxBatch([OutboxRow.from_row(row) for row in rows], mark)

    async def mark_published(self, tx: Transaction, ids: Sequence[int]) -> None:
        await tx.execute("UPDATE outbox SET published_at = ? WHERE id = ANY(?)", (now_ms(), list(ids)))

    async def close(self) -> None:
        await self._pool.close()
