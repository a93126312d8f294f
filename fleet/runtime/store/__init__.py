"""A service's transactional state: an inbox (effects exactly once), an outbox and its relay.

On SQLite or PostgreSQL."""

from __future__ import annotations

from fleet.runtime.store.base import (
    INBOX_RETENTION_S,
    DuplicateOutboxEvent,
    OutboxBatch,
    OutboxRow,
    Store,
    Transaction,
    to_pyformat,
)
from fleet.runtime.store.relay import OutboxRelay, Producer

__all__ = [
    "INBOX_RETENTION_S",
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


async def open_store(url: str, *, pool_size: int = 10, wait_s: float = 5.0) -> Store:
    """`sqlite:///relative/file.db`, `sqlite:////absolute/file.db` or `postgresql://user@host:port/db`, with the
    store's own inbox and outbox tables created; `pool_size` bounds PostgreSQL connections, `wait_s` how long a
    transaction waits for one."""
    if url.startswith("sqlite:///"):
        from fleet.runtime.store.sqlite import SqliteStore

        store: Store = await SqliteStore.open(url, url.removeprefix("sqlite:///"))
    elif url.startswith(("postgresql://", "postgres://")):
        from fleet.runtime.store.postgres import PostgresStore

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
