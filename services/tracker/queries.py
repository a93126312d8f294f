"""The tracker's read model in its store: one row per order, and the API's query.

A row holds the order's status, flow, customer and history (as JSON)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson

from fleet.runtime.store import Store, Transaction

from .core import HistoryEntry, OrderStatus

__all__ = ["MIGRATIONS", "load", "order_status", "save"]

MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS order_status (
        order_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        history TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
]

COLUMNS = "order_id, status, correlation_id, customer_id, history"
SELECT = f"SELECT {COLUMNS} FROM order_status WHERE order_id = ?"
# The same statement on SQLite and PostgreSQL: both take ON CONFLICT ... DO UPDATE with `excluded.`.
UPSERT = (
    f"INSERT INTO order_status ({COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, correlation_id = excluded.correlation_id, "
    "customer_id = excluded.customer_id, history = excluded.history, updated_at = excluded.updated_at"
)
# Two events of one order can be folded at once on PostgreSQL (the main and a retry subscriber, or two replicas);
# without this the later save would drop the other's history entry. A transaction lock covers orders not yet seen,
# which a row lock (SELECT ... FOR UPDATE) cannot.
LOCK_ORDER = "SELECT pg_advisory_xact_lock(hashtext(?))"


async def load(tx: Transaction, order_id: str) -> OrderStatus | None:
    """The order's status so far, or None; on PostgreSQL the order stays locked until `tx` ends, so folds take turns."""
    if tx.dialect == "postgresql":
        await tx.execute(LOCK_ORDER, (f"tracker.order_status:{order_id}",))
    row = await tx.fetchone(SELECT, (order_id,))
    return _status_of(row) if row else None


async def save(tx: Transaction, status: OrderStatus) -> None:
    """Writes the order's status, inserting its row or replacing it."""
    # orjson writes the dataclasses itself: json.dumps over dataclasses.asdict was a fifth of the tracker's CPU per
    # event in a burst (py-spy, docs/performance.md). The text is JSON either way; `_status_of` reads both spellings.
    history = orjson.dumps(status.history).decode()
    updated_at = datetime.now(UTC).isoformat(timespec="microseconds")
    await tx.execute(
        UPSERT, (status.order_id, status.status, status.correlation_id, status.customer_id, history, updated_at)
    )


async def order_status(store: Store, order_id: str) -> dict[str, Any] | None:
    """What the API answers for an order: its status, flow, customer and history;
    None when the tracker has not seen it."""
    async with store.transaction() as tx:
        row = await tx.fetchone(SELECT, (order_id,))
    return _as_answer(_status_of(row)) if row else None


def _status_of(row: tuple) -> OrderStatus:
    order_id, status, correlation_id, customer_id, history = row
    entries = tuple(HistoryEntry(**entry) for entry in orjson.loads(history))
    return OrderStatus(
        order_id=order_id, status=status, correlation_id=correlation_id, customer_id=customer_id, history=entries
    )


def _as_answer(status: OrderStatus) -> dict[str, Any]:
    return asdict(status) | {"history": [asdict(entry) for entry in status.history]}
