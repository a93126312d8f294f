"""Notifications' decisions, pure: what to tell the customer about a payment outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts import InventoryBackordered, NotificationSent, PaymentAuthorized, PaymentDeclined, ShipmentScheduled

__all__ = ["DECLINE_EXPLANATIONS", "Notification", "compose"]

DECLINE_EXPLANATIONS = {
    "over_limit": "the total is above your spending limit",
    "unsupported_currency": "we cannot take payments in that currency",
    "total_mismatch": "the order total did not match its items",
}


@dataclass(frozen=True)
class Notification:
    """A message for one customer, and the fact that it was recorded."""

    subject: str
    body: str
    sent: NotificationSent

    def as_outbox_line(self) -> dict:
        return {
            "notification_id": self.sent.notification_id,
            "order_id": self.sent.order_id,
            "customer_id": self.sent.customer_id,
            "channel": self.sent.channel,
            "template": self.sent.template,
            "subject": self.subject,
            "body": self.body,
            "recorded_at": self.sent.sent_at.isoformat(),
        }


Outcome = PaymentAuthorized | PaymentDeclined | InventoryBackordered | ShipmentScheduled


def compose(outcome: Outcome, now: datetime) -> Notification:
    """An email for the customer; its id is derived from order and template, so a redelivery yields the same one."""
    template, subject, body = _message(outcome)
    sent = NotificationSent(
        notification_id=f"ntf-{outcome.order_id}-{template}",
        order_id=outcome.order_id,
        customer_id=outcome.customer_id,
        channel="email",
        template=template,
        sent_at=now,
    )
    return Notification(subject=subject, body=body, sent=sent)


def _message(outcome: Outcome) -> tuple[str, str, str]:
    order = outcome.order_id
    match outcome:
        case PaymentAuthorized():
            return "payment_authorized", f"Order {order}: payment confirmed", f"We received {_money(outcome.amount_cents, outcome.currency)} for order {order}."
        case PaymentDeclined():
            why = DECLINE_EXPLANATIONS[outcome.reason]
            return "payment_declined", f"Order {order}: payment declined", f"We could not take {_money(outcome.amount_cents, outcome.currency)} for order {order}: {why}."
        case InventoryBackordered():
            short = ", ".join(f"{m.sku} ({m.available} of {m.requested} in stock)" for m in outcome.missing)
            return "order_backordered", f"Order {order}: waiting for stock", f"Order {order} is paid and waits for new stock of {short}."
        case ShipmentScheduled():
            return "shipment_scheduled", f"Order {order}: shipping {outcome.ship_by:%A %d %B}", f"Your {outcome.units} item(s) leave by {outcome.carrier} on {outcome.ship_by:%Y-%m-%d}."
    raise TypeError(f"no message for {type(outcome).__name__}")


def _money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"
