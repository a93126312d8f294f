"""The store on SQLite: one file per service, one writer at a time.

A transaction costs one hop to the store's own thread, whatever its size: COMMIT, which syncs to disk. BEGIN IMMEDIATE
runs on the event loop when the file's write lock is free, as it is unless another process writes (a CLI, a second
replica by mistake), and goes to the store's thread to wait for it only when it is not. The statements between them run
on the event loop too: the transaction holds the write lock, so none of them waits for a lock, and each takes
microseconds, less than a thread hop would (docs/store.md, docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fleet.runtime.store.base import PENDING_COLUMNS, OutboxBatch, OutboxRow, Store, Transaction, now_ms

__all__ = ["SYNCHRONOUS", "SqliteStore"]

T = TypeVar("T")
# FULL: a committed transaction survives a power cut, not only a crash of the process. It costs one fsync per
# transaction, and a transaction is a whole batch: docs/store.md has the measurement behind the choice.
SYNCHRONOUS = "FULL"
# How long a transaction waits for another process's write lock (on the store's thread, never on the event loop).
BUSY_TIMEOUT_MS = 5000
MARK = "UPDATE outbox SET published_at = ? WHERE id IN (SELECT value FROM json_each(?))"


class _OnTheLoop:
    """Runs statements on the calling thread: only ever inside a transaction that holds the write lock."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    async def run(self, sql: str, params: Sequence[Any]) -> int:
        return self._connection.execute(sql, tuple(params)).rowcount

    async def one(self, sql: str, params: Sequence[Any]) -> tuple | None:
        row = self._connection.execute(sql, tuple(params)).fetchone()
        return tuple(row) if row is not None else None

    async def all(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        return [tuple(row) for row in self._connection.execute(sql, tuple(params)).fetchall()]


class SqliteStore(Store):
    """One file, one writer at a time: every transaction takes the write lock at BEGIN (IMMEDIATE), so none fails
    late."""

    dialect = "sqlite"

    def __init__(self, url: str, connection: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        super().__init__(url)
        self._connection = connection
        self._thread = thread  # the store's own thread: BEGIN, COMMIT, ROLLBACK and closing, which may wait on the disk
        # One connection serves the whole process, so its transactions take turns; BEGIN IMMEDIATE and busy_timeout
        # make another process (a CLI, a second replica by mistake) wait for the file's write lock instead of failing.
        self._lock = asyncio.Lock()
        self._relay_lock = asyncio.Lock()  # the relays of this store take turns: none publishes a row another holds

    @classmethod
    async def open(cls, url: str, path: str) -> SqliteStore:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        thread = ThreadPoolExecutor(1, thread_name_prefix="fleet-sqlite")

        def connect() -> sqlite3.Connection:
            # isolation_level None: no implicit transactions, we BEGIN ourselves. check_same_thread False: the store's
            # thread and the event loop take turns on it, never at once (the lock below).
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # WAL: readers (the gateway, `fleet status`) never block the writer. busy_timeout 0: a statement on the
            # event loop never waits for a lock; BEGIN IMMEDIATE waits on the store's thread instead (`_begin_waiting`).
            for pragma in (
                f"busy_timeout = {BUSY_TIMEOUT_MS}",  # for switching to WAL: another process may hold the file
                "journal_mode = WAL",
                f"synchronous = {SYNCHRONOUS}",
                "busy_timeout = 0",
                "foreign_keys = ON",
            ):
                connection.execute(f"PRAGMA {pragma}")
            return connection

        loop = asyncio.get_running_loop()
        try:
            connection = await loop.run_in_executor(thread, connect)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(url, connection, thread)

    async def _in_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    def _execute(self, sql: str) -> Callable[[], sqlite3.Cursor]:
        return lambda: self._connection.execute(sql)

    async def _begin_immediate(self) -> None:
        """Takes the file's write lock: here when it is free (microseconds, where a thread hop costs 35-80 µs of CPU on
        the machine of docs/performance.md), on the store's thread when another process holds it."""
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if getattr(error, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:  # or an extended busy code
                raise
            await self._in_thread(self._begin_waiting)

    def _begin_waiting(self) -> None:
        """BEGIN IMMEDIATE that waits up to BUSY_TIMEOUT_MS for another process's write lock (on the store's thread)."""
        self._connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        finally:
            self._connection.execute("PRAGMA busy_timeout = 0")

    @contextlib.asynccontextmanager
    async def _begin(self, migrating: bool = False) -> AsyncIterator[Transaction]:
        async with self._lock:
            await self._begin_immediate()
            try:
                yield Transaction(_OnTheLoop(self._connection), self.dialect)
                await self._in_thread(self._execute("COMMIT"))
            except BaseException:
                if self._connection.in_transaction:  # a failed COMMIT leaves the transaction open too
                    await asyncio.shield(self._in_thread(self._execute("ROLLBACK")))
                raise

    @contextlib.asynccontextmanager
    async def pending(self, limit: int, created_before_ms: int | None = None) -> AsyncIterator[OutboxBatch]:
        # Rows are read and marked in two short transactions, not one held while Kafka answers: a slow or absent
        # broker must not hold the file's write lock, which every handler's transaction needs.
        age = "" if created_before_ms is None else " AND o.created_at <= ?"
        async with self._relay_lock:
            async with self._begin() as tx:
                # Not the rows a relay holds in memory (handed over, not yet marked): it publishes those itself. Read
                # inside the transaction: a commit that went before it has handed its rows over by now.
                in_hand = " AND o.id NOT IN (SELECT value FROM json_each(?))" if self._in_hand else ""
                held = [json.dumps(sorted(self._in_hand))] if in_hand else []
                params = [*([created_before_ms] if age else []), *held, limit]
                rows = await tx.fetchall(f"{PENDING_COLUMNS}{age}{in_hand} ORDER BY o.id LIMIT ?", params)
            yield OutboxBatch([OutboxRow.from_row(row) for row in rows], self._mark)

    async def _mark(self, ids: list[int]) -> None:
        async with self._begin() as tx:
            await self.mark_published(tx, ids)

    async def mark_published(self, tx: Transaction, ids: Sequence[int]) -> None:
        await tx.execute(MARK, (now_ms(), json.dumps(list(ids))))
        self.release(ids)

    async def close(self) -> None:
        async with self._lock:
            await self._in_thread(self._connection.close)
        self._thread.shutdown(wait=True)
