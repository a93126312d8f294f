"""Inventory's tables in its store: stock per product, the lines of each order it has heard of, and its reservations."""

from __future__ import annotations

import json
from typing import Iterable

from contracts import Envelope, OrderItem, OrderPlaced, OrderPlacedV2, PaymentAuthorized, StockReceived
from fleet.runtime.store import Transaction

__all__ = [
    "MIGRATIONS",
    "add_stock",
    "items_of",
    "levels",
    "park_payment",
    "remember_order",
    "set_levels",
    "settle_once",
    "take_parked",
]

MIGRATIONS = [
    "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, units BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS order_lines (order_id TEXT PRIMARY KEY, items TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS reservations (order_id TEXT PRIMARY KEY, outcome TEXT NOT NULL, "
    "decided_at TEXT NOT NULL)",
    # A payment heard before its order's lines (they travel on another topic): settled when the lines arrive.
    "CREATE TABLE IF NOT EXISTS parked_payments (order_id TEXT PRIMARY KEY, payment TEXT NOT NULL, "
    "envelope TEXT NOT NULL)",
]


async def add_stock(tx: Transaction, received: StockReceived) -> None:
    await tx.execute(
        "INSERT INTO stock (sku, units) VALUES (?, ?) "
        "ON CONFLICT (sku) DO UPDATE SET units = stock.units + excluded.units",
        (received.sku, received.quantity),
    )


async def remember_order(tx: Transaction, order: OrderPlaced | OrderPlacedV2) -> None:
    items = json.dumps([item.model_dump() for item in order.items])
    await tx.execute(
        "INSERT INTO order_lines (order_id, items) VALUES (?, ?) ON CONFLICT (order_id) DO NOTHING",
        (order.order_id, items),
    )


async def items_of(tx: Transaction, order_id: str) -> tuple[OrderItem, ...] | None:
    row = await tx.fetchone("SELECT items FROM order_lines WHERE order_id = ?", (order_id,))
    return tuple(OrderItem.model_validate(item) for item in json.loads(row[0])) if row else None


async def levels(tx: Transaction, skus: Iterable[str]) -> dict[str, int]:
    skus = sorted(set(skus))
    marks = ", ".join("?" for _ in skus)
    rows = await tx.fetchall(f"SELECT sku, units FROM stock WHERE sku IN ({marks})", skus) if skus else []
    return {sku: units for sku, units in rows}


async def set_levels(tx: Transaction, stock: dict[str, int]) -> None:
    for sku, units in sorted(stock.items()):
        await tx.execute(
            "INSERT INTO stock (sku, units) VALUES (?, ?) ON CONFLICT (sku) DO UPDATE SET units = excluded.units",
            (sku, units),
        )


async def settle_once(tx: Transaction, order_id: str, outcome: str, decided_at: str) -> bool:
    """True the first time an order is settled (reserved or backordered); a second payment of it changes nothing."""
    changed = await tx.execute(
        "INSERT INTO reservations (order_id, outcome, decided_at) VALUES (?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
        (order_id, outcome, decided_at),
    )
    return changed == 1


async def park_payment(tx: Transaction, payment: PaymentAuthorized, envelope: Envelope) -> None:
    """Keeps a payment whose order lines are not known yet, with its envelope (the cause of the outcome to come)."""
    await tx.execute(
        "INSERT INTO parked_payments (order_id, payment, envelope) VALUES (?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
        (payment.order_id, payment.model_dump_json(), json.dumps(envelope.to_headers())),
    )


async def take_parked(tx: Transaction, order_id: str) -> tuple[PaymentAuthorized, Envelope] | None:
    """The payment parked for this order, removed from the table (in the caller's transaction), or None."""
    row = await tx.fetchone("SELECT payment, envelope FROM parked_payments WHERE order_id = ?", (order_id,))
    if row is None:
        return None
    await tx.execute("DELETE FROM parked_payments WHERE order_id = ?", (order_id,))
    headers = [(name, value.encode("utf-8")) for name, value in json.loads(row[1]).items()]
    return PaymentAuthorized.model_validate_json(row[0]), Envelope.from_headers(headers)
