"""Shipping's decisions, pure: which carrier takes a reserved order, and on which working day it leaves."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from contracts import InventoryReserved, ShipmentScheduled

__all__ = ["FREIGHT_ABOVE_UNITS", "next_working_day", "schedule", "shipment_id_for"]

FREIGHT_ABOVE_UNITS = 10


def shipment_id_for(order_id: str) -> str:
    return f"shp-{order_id}"


def next_working_day(day: date) -> date:
    """The next Monday to Friday after `day` (no holidays: the warehouse works every weekday)."""
    following = day + timedelta(days=1)
    while following.weekday() >= 5:
        following += timedelta(days=1)
    return following


def schedule(reservation: InventoryReserved, now: datetime) -> ShipmentScheduled:
    """Parcel for up to ten units, freight above; it leaves on the next working day."""
    units = sum(line.quantity for line in reservation.items)
    return ShipmentScheduled(
        order_id=reservation.order_id,
        customer_id=reservation.customer_id,
        shipment_id=shipment_id_for(reservation.order_id),
        carrier="freight" if units > FREIGHT_ABOVE_UNITS else "parcel",
        units=units,
        ship_by=next_working_day(now.date()),
        scheduled_at=now,
    )
