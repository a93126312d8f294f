"""The stores of a read model's rebuild: a fresh one beside the live one, and the swap of the model into the live one.

The swap copies the rebuilt tables and the group's inbox claims into the live store in ONE write transaction, after
checking that the rebuild has every event the live model has folded. Readers keep their connections: a plain read sees
the old content until the commit and the new after it; a store transaction (the gateway's query takes SQLite's write
lock too) waits for the commit. The copy is short: 0.8 s for 100,000 orders and 300,000 claims on SQLite (measured),
well inside the store's 5 s busy timeout. No request fails, nothing restarts.

Why a copy, not a rename of the new file over the old one: SQLite in WAL mode keeps committed pages in `<file>-wal`
and `<file>-shm` beside the database. A process that holds the database open (the tracker, the gateway) keeps reading
and writing the renamed-away inode while its -wal and -shm are found by name: it would go on serving the old model,
and its next write could land in the new file's WAL, corrupting it (sqlite.org/howtocorrupt.html, "Unlinking or
renaming a database file while in use"). A copy inside the live file is what every connection sees, at a commit.
On PostgreSQL the fresh model is built in a schema of its own in the same database, and copied the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from fleet.runtime.read_model import ReadModel
from fleet.runtime.store import Store, open_store

__all__ = [
    "SWAP_WAIT_S",
    "FreshStore",
    "NoLiveStore",
    "StoreNotRebuildable",
    "Swap",
    "fresh_store_beside",
    "swap_sqlite",
    "with_search_path",
]

# How long the swap waits for the live store's write lock (the service's batch in hand, a reader's transaction).
SWAP_WAIT_S = 30.0
INBOX = "inbox"  # the store's own table of claims (fleet.runtime.store); a group's rows are the model's claims


class NoLiveStore(LookupError):
    """The live store the rebuild would swap into does not exist, or does not hold the read model yet."""


class StoreNotRebuildable(ValueError):
    """A store URL the rebuild cannot build beside (an in-memory SQLite database, a scheme of no known kind)."""


@dataclass(frozen=True)
class Swap:
    """What one swap attempt did: the live model's events the rebuilt one lacks (then nothing was swapped), or the
    rows it put in place, and how long the live store was locked."""

    missing: frozenset[str]
    rows: int = 0
    claims: int = 0
    locked_s: float = 0.0

    @property
    def swapped(self) -> bool:
        return not self.missing


class _Site(Protocol):
    """Where a fresh store goes beside one kind of live store, and how its model is swapped in."""

    where: str

    async def check_live(self, tables: Sequence[str]) -> None: ...

    async def create(self) -> Store: ...

    async def swap(self, tables: Sequence[str], group: str, accepting: frozenset[str]) -> Swap: ...

    async def discard(self) -> None: ...


class FreshStore:
    """The fresh store, migrated, for the fold; `swap` puts its model in the live store's place."""

    def __init__(self, site: _Site, store: Store, model: ReadModel) -> None:
        self._site = site
        self.store = store
        self.model = model
        self.where = site.where

    async def swap(self, group: str, accepting: frozenset[str] = frozenset()) -> Swap:
        """Swaps the model in, in one transaction, unless the live model has folded events the fresh one lacks (less
        `accepting`): then it changes nothing and says which."""
        return await self._site.swap(self.model.tables, group, accepting)


@contextlib.asynccontextmanager
async def fresh_store_beside(live_url: str, model: ReadModel, *, now: datetime) -> AsyncIterator[FreshStore]:
    """A fresh store beside the live one (SQLite: `<live file>.rebuild-<time>`; PostgreSQL: a schema
    `<live schema>_rebuild_<time>` in its database) with the model's migrations, deleted when the block ends: once
    swapped its content lives in the live store, and a rebuild that failed is started again from scratch."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    site = _site_of(live_url, stamp)
    await site.check_live(model.tables)
    try:
        store = await site.create()
        try:
            await store.migrate(list(model.migrations))
            yield FreshStore(site, store, model)
        finally:
            await store.close()
    finally:
        await site.discard()


def _site_of(live_url: str, stamp: str) -> _Site:
    if live_url.startswith("sqlite:///"):
        path = live_url.removeprefix("sqlite:///")
        if path == ":memory:":
            raise StoreNotRebuildable(f"cannot rebuild beside {live_url}: no other process can open it")
        return _SqliteSite(Path(path), Path(f"{path}.rebuild-{stamp}"))
    if live_url.startswith(("postgresql://", "postgres://")):
        return _PostgresSite(live_url, stamp.lower())
    raise StoreNotRebuildable(f"cannot rebuild beside {live_url}: not an sqlite:/// or postgresql:// store URL")


# ---- SQLite: a file beside the live one, attached to it for the swap ------------------------------------------------


class _SqliteSite:
    def __init__(self, live: Path, fresh: Path) -> None:
        self.live, self.fresh = live, fresh
        self.where = str(fresh)
        self.created = False

    async def check_live(self, tables: Sequence[str]) -> None:
        await asyncio.to_thread(_check_sqlite_tables, self.live, [*tables, INBOX])

    async def create(self) -> Store:
        try:
            self.fresh.touch(exist_ok=False)  # ours alone: never another rebuild's file
        except FileExistsError:
            raise FileExistsError(
                f"{self.fresh} exists: another rebuild is under way, or one was killed (then delete it)"
            ) from None
        self.created = True
        return await open_store(f"sqlite:///{self.fresh}")

    async def swap(self, tables: Sequence[str], group: str, accepting: frozenset[str]) -> Swap:
        return await asyncio.to_thread(swap_sqlite, self.live, self.fresh, tables, group, accepting)

    async def discard(self) -> None:
        if not self.created:
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.fresh}{suffix}").unlink(missing_ok=True)


def _check_sqlite_tables(live: Path, tables: Sequence[str]) -> None:
    if not live.is_file():
        raise NoLiveStore(f"no store at {live}: the service has not run with it yet, there is nothing to rebuild")
    connection = sqlite3.connect(live, timeout=SWAP_WAIT_S)  # it exists: connecting creates nothing; only reads
    try:
        found = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        connection.close()
    if absent := [table for table in tables if table not in found]:
        raise NoLiveStore(f"the store at {live} has no table {', '.join(absent)}: it is not this service's store")


def swap_sqlite(
    live: Path,
    fresh: Path,
    tables: Sequence[str],
    group: str,
    accepting: frozenset[str] = frozenset(),
    *,
    before_commit: Callable[[], Any] | None = None,
) -> Swap:
    """In one write transaction of the live file: checks that the fresh model has every event the live one folded
    (the group's claims; but `accepting`), then replaces each table's rows and the group's claims with the fresh ones.
    `before_commit` runs inside the transaction, just before COMMIT (a test's way in)."""
    connection = sqlite3.connect(live, isolation_level=None, timeout=SWAP_WAIT_S)
    try:
        connection.execute("PRAGMA synchronous = FULL")  # as durable as the store's own commits
        connection.execute("ATTACH DATABASE ? AS rebuilt", (str(fresh),))  # not allowed inside a transaction
        # IMMEDIATE: the write lock from the start. The service's batches wait (it is paused anyway); WAL readers go on
        # reading the last committed content meanwhile, and the store's readers, which BEGIN IMMEDIATE too, wait.
        connection.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        try:
            swap = _swap_in(connection, tables, group, accepting)
            if swap.swapped and before_commit is not None:
                before_commit()
            connection.execute("COMMIT" if swap.swapped else "ROLLBACK")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return Swap(swap.missing, swap.rows, swap.claims, time.monotonic() - started)
    finally:
        connection.close()


def _swap_in(connection: sqlite3.Connection, tables: Sequence[str], group: str, accepting: frozenset[str]) -> Swap:
    sql = _statements(live="main.", fresh="rebuilt.", placeholder="?")
    missing = {row[0] for row in connection.execute(sql["missing"], (group, group))} - accepting
    if missing:
        return Swap(frozenset(missing))
    rows = 0
    for table in tables:
        columns = ", ".join(f'"{row[1]}"' for row in connection.execute(f'PRAGMA rebuilt.table_info("{table}")'))
        connection.execute(f'DELETE FROM main."{table}"')
        rows += connection.execute(
            f'INSERT INTO main."{table}" ({columns}) SELECT {columns} FROM rebuilt."{table}"'
        ).rowcount
    connection.execute(sql["drop_claims"], (group,))
    claims = connection.execute(sql["copy_claims"], (group,)).rowcount
    return Swap(frozenset(), rows, claims)


def _statements(*, live: str, fresh: str, placeholder: str) -> dict[str, str]:
    """The swap's statements on the group's claims, for live and fresh tables prefixed as given."""
    p = placeholder
    return {
        # The live model's events (the group's claims) that the fresh one has not folded.
        "missing": f"SELECT event_id FROM {live}{INBOX} WHERE group_id = {p} "
        f"EXCEPT SELECT event_id FROM {fresh}{INBOX} WHERE group_id = {p}",
        "drop_claims": f"DELETE FROM {live}{INBOX} WHERE group_id = {p}",
        "copy_claims": f"INSERT INTO {live}{INBOX} (group_id, event_id, claimed_at) "
        f"SELECT group_id, event_id, claimed_at FROM {fresh}{INBOX} WHERE group_id = {p}",
    }


# ---- PostgreSQL: a schema beside the live one, in the same database -------------------------------------------------


def with_search_path(url: str, schema: str) -> str:
    """The URL whose connections use `schema` for unqualified names (libpq's `options`, kept and added to: the last
    `-c search_path` wins)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = " ".join([*(value for name, value in query if name == "options"), f"-csearch_path={schema}"])
    kept = [(name, value) for name, value in query if name != "options"]
    return urlunsplit(parts._replace(query=urlencode([*kept, ("options", options)], quote_via=quote)))


class _PostgresSite:
    def __init__(self, live_url: str, stamp: str) -> None:
        self.live_url = live_url
        self.stamp = stamp
        self.schema = ""  # known once the live schema is: `<live schema>_rebuild_<stamp>`
        self.where = ""
        self.created = False

    async def _connect(self) -> Any:
        import psycopg  # imported late: an SQLite rebuild does not need it

        return await psycopg.AsyncConnection.connect(self.live_url, autocommit=True)

    async def check_live(self, tables: Sequence[str]) -> None:
        async with await self._connect() as connection:
            [(live_schema,)] = await _all(connection, "SELECT current_schema()")
            absent = [
                t for t in [*tables, INBOX] if (await _all(connection, "SELECT to_regclass(%s)", (t,)))[0][0] is None
            ]
        if absent:
            raise NoLiveStore(
                f"the store at schema {live_schema} has no table {', '.join(absent)}: the service has not run with it"
            )
        # PostgreSQL folds unquoted names to lower case, and an identifier is at most 63 bytes.
        self.schema = f"{live_schema}_rebuild_{self.stamp}"[-63:].lower()
        self.where = f"schema {self.schema}"

    async def create(self) -> Store:
        async with await self._connect() as connection:
            await connection.execute(f'CREATE SCHEMA "{self.schema}"')  # fails if it exists: never another's
        self.created = True
        return await open_store(with_search_path(self.live_url, self.schema), pool_size=2)

    async def swap(self, tables: Sequence[str], group: str, accepting: frozenset[str]) -> Swap:
        import psycopg

        async with await self._connect() as connection:
            started = time.monotonic()
            async with connection.transaction():
                swap = await self._swap_in(connection, tables, group, accepting)
                if not swap.swapped:
                    raise psycopg.Rollback()  # leaves the block, rolled back, without an error
            return replace(swap, locked_s=time.monotonic() - started)

    async def _swap_in(self, connection: Any, tables: Sequence[str], group: str, accepting: frozenset[str]) -> Swap:
        fresh = f'"{self.schema}".'
        sql = _statements(live="", fresh=fresh, placeholder="%s")  # the live tables: the connection's search path
        # EXCLUSIVE: writers wait, plain reads go on (they see the old rows until the commit). The inbox first: the
        # service's transactions claim first, then write the model; taking the locks the other way round could deadlock.
        names = ", ".join(f'"{name}"' for name in [INBOX, *tables])
        await connection.execute(f"LOCK TABLE {names} IN EXCLUSIVE MODE")
        missing = {row[0] for row in await _all(connection, sql["missing"], (group, group))} - accepting
        if missing:
            return Swap(frozenset(missing))
        rows = 0
        for table in tables:
            found = await _all(connection, COLUMNS, (self.schema, table))
            columns = ", ".join(f'"{row[0]}"' for row in found)
            await connection.execute(f'DELETE FROM "{table}"')
            copied = await connection.execute(
                f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM {fresh}"{table}"'
            )
            rows += copied.rowcount
        await connection.execute(sql["drop_claims"], (group,))
        claims = await connection.execute(sql["copy_claims"], (group,))
        return Swap(frozenset(), rows, claims.rowcount)

    async def discard(self) -> None:
        if not self.created:
            return
        async with await self._connect() as connection:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


COLUMNS = (
    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
    "ORDER BY ordinal_position"
)


async def _all(connection: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    cursor = await connection.execute(sql, params)
    return list(await cursor.fetchall())
