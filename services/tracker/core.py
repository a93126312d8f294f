"""The tracker's read model, pure: an order's status and history, folded from the events of its flow in any order."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from contracts import (
    Envelope,
    Event,
    InventoryBackordered,
    InventoryReserved,
    NotificationSent,
    OrderPlacedV2,
    PaymentAuthorized,
    PaymentDeclined,
    ShipmentScheduled,
)

__all__ = ["STAGES", "HistoryEntry", "OrderEvent", "OrderStatus", "apply", "status_after"]

# Every event of an order's flow: each names its order (`order_id`). An order of orders.placed.v1 comes upcast to v2
# (the history keeps the record's own type).
OrderEvent = (
    OrderPlacedV2
    | PaymentAuthorized
    | PaymentDeclined
    | InventoryReserved
    | InventoryBackordered
    | ShipmentScheduled
    | NotificationSent
)

# How far an order got; a later stage wins over an earlier one whatever order the events arrive in.
STAGES = {
    "placed": 1,
    "payment_declined": 2,
    "payment_authorized": 2,
    "backordered": 3,
    "reserved": 3,
    "shipment_scheduled": 4,
}
STAGE_OF = {
    OrderPlacedV2: "placed",
    PaymentDeclined: "payment_declined",
    PaymentAuthorized: "payment_authorized",
    InventoryBackordered: "backordered",
    InventoryReserved: "reserved",
    ShipmentScheduled: "shipment_scheduled",
}


@dataclass(frozen=True)
class HistoryEntry:
    event_type: str
    event_id: str
    time: str
    source: str


@dataclass(frozen=True)
class OrderStatus:
    order_id: str
    status: str = "unknown"
    correlation_id: str = ""
    customer_id: str = ""
    history: tuple[HistoryEntry, ...] = field(default_factory=tuple)


def status_after(current: str, event: Event) -> str:
    """The later of the current status and the event's stage; a notification does not move the status."""
    stage = STAGE_OF.get(type(event))
    if stage is None or STAGES.get(current, 0) > STAGES[stage]:
        return current
    return stage


def apply(current: OrderStatus | None, event: OrderEvent, envelope: Envelope) -> OrderStatus:
    """The status after one more event of the order's flow; an event seen before (same ce_id) changes nothing."""
    order_id = event.order_id
    current = current or OrderStatus(order_id=order_id)
    if any(entry.event_id == envelope.id for entry in current.history):
        return current
    entry = HistoryEntry(event_type=envelope.type, event_id=envelope.id, time=envelope.time, source=envelope.source)
    history = tuple(sorted((*current.history, entry), key=lambda e: (e.time, e.event_id)))
    return replace(
        current,
        status=status_after(current.status, event),
        correlation_id=current.correlation_id or envelope.correlation_id,
        customer_id=current.customer_id or getattr(event, "customer_id", ""),
        history=history,
    )
