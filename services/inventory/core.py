"""Inventory's decisions, pure: reserve every line of a paid order from stock, or none of them (a backorder)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping

from contracts import InventoryBackordered, InventoryReserved, MissingStock, OrderItem, PaymentAuthorized, StockLine

__all__ = ["Reservation", "reservation_id_for", "reserve", "wanted"]


@dataclass(frozen=True)
class Reservation:
    """The decision, and the stock levels it leaves (unchanged for a backorder)."""

    outcome: InventoryReserved | InventoryBackordered
    stock_after: Mapping[str, int]


def reservation_id_for(order_id: str) -> str:
    return f"rsv-{order_id}"


def wanted(items: Iterable[OrderItem]) -> dict[str, int]:
    """Units per product: an order may name one product on several lines."""
    totals: dict[str, int] = {}
    for item in items:
        totals[item.sku] = totals.get(item.sku, 0) + item.quantity
    return totals


def reserve(
    payment: PaymentAuthorized, items: Iterable[OrderItem], stock: Mapping[str, int], now: datetime
) -> Reservation:
    """All or nothing: a partial reservation would ship half an order and strand the rest,
    so any shortage backorders it."""
    needed = wanted(items)
    missing = [
        MissingStock(sku=sku, requested=units, available=stock.get(sku, 0))
        for sku, units in sorted(needed.items())
        if stock.get(sku, 0) < units
    ]
    if missing:
        backordered = InventoryBackordered(
            order_id=payment.order_id, customer_id=payment.customer_id, missing=tuple(missing), backordered_at=now
        )
        return Reservation(backordered, dict(stock))
    reserved = InventoryReserved(
        order_id=payment.order_id,
        customer_id=payment.customer_id,
        reservation_id=reservation_id_for(payment.order_id),
        items=tuple(StockLine(sku=sku, quantity=units) for sku, units in sorted(needed.items())),
        reserved_at=now,
    )
    return Reservation(reserved, {**stock, **{sku: stock[sku] - units for sku, units in needed.items()}})
