"""The store on SQLite: one file per service, one writer at a time (aiosqlite's thread)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fleet.runtime.store.base import PENDING_COLUMNS, OutboxBatch, OutboxRow, Store, Transaction, now_ms

__all__ = ["SqliteStore"]


class SqliteStore(Store):
    """One file, one writer at a time: every transaction takes the write lock at BEGIN (IMMEDIATE),
    so none fails late."""

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
