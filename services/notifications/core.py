"""Notifications' decisions, pure: what to tell the customer about a payment outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts import InventoryBackordered, NotificationSent, PaymentAuthorized, PaymentDeclined, ShipmentScheduled

__all__ = ["CHANNEL", "DECLINE_EXPLANATIONS", "FEED_COLUMNS", "PLACED_THROUGH", "Notification", "compose", "feed_line"]

CHANNEL = "email"  # the only channel so far; the feed line and the event both name it

# How the text names where the order was placed (orders.placed.v2's `channel`).
PLACED_THROUGH = {"web": "in our web shop", "store": "in one of our stores", "phone": "by phone"}

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
        sent = self.sent
        return feed_line(
            sent.notification_id,
            sent.order_id,
            sent.customer_id,
            sent.template,
            self.subject,
            self.body,
            sent.sent_at.isoformat(),
        )


# The columns of the notifications table, in the order `feed_line` takes them.
FEED_COLUMNS = ("notification_id", "order_id", "customer_id", "template", "subject", "body", "recorded_at")


def feed_line(
    notification_id: str, order_id: str, customer_id: str, template: str, subject: str, body: str, recorded_at: str
) -> dict:
    """The mail system's line for one notification: the same whether written at once or caught up after a crash."""
    return {
        "notification_id": notification_id,
        "order_id": order_id,
        "customer_id": customer_id,
        "channel": CHANNEL,
        "template": template,
        "subject": subject,
        "body": body,
        "recorded_at": recorded_at,
    }


Outcome = PaymentAuthorized | PaymentDeclined | InventoryBackordered | ShipmentScheduled


def compose(outcome: Outcome, now: datetime, placed_through: str | None = None) -> Notification:
    """An email for the customer; its id is derived from order and template, so a redelivery yields the same one.
    `placed_through` is the order's channel (`web`, `store`, `phone`) when known: the text then names it."""
    template, subject, body = _message(outcome)
    if placed_through in PLACED_THROUGH:
        body = f"{body} You placed this order {PLACED_THROUGH[placed_through]}."
    sent = NotificationSent(
        notification_id=f"ntf-{outcome.order_id}-{template}",
        order_id=outcome.order_id,
        customer_id=outcome.customer_id,
        channel=CHANNEL,
        template=template,
        sent_at=now,
    )
    return Notification(subject=subject, body=body, sent=sent)


def _message(outcome: Outcome) -> tuple[str, str, str]:
    order = outcome.order_id
    match outcome:
        case PaymentAuthorized():
            return (
                "payment_authorized",
                f"Order {order}: payment confirmed",
                f"We received {_money(outcome.amount_cents, outcome.currency)} for order {order}.",
            )
        case PaymentDeclined():
            why = DECLINE_EXPLANATIONS[outcome.reason]
            return (
                "payment_declined",
                f"Order {order}: payment declined",
                f"We could not take {_money(outcome.amount_cents, outcome.currency)} for order {order}: {why}.",
            )
        case InventoryBackordered():
            short = ", ".join(f"{m.sku} ({m.available} of {m.requested} in stock)" for m in outcome.missing)
            return (
                "order_backordered",
                f"Order {order}: waiting for stock",
                f"Order {order} is paid and waits for new stock of {short}.",
            )
        case ShipmentScheduled():
            return (
                "shipment_scheduled",
                f"Order {order}: shipping {outcome.ship_by:%A %d %B}",
                f"Your {outcome.units} item(s) leave by {outcome.carrier} on {outcome.ship_by:%Y-%m-%d}.",
            )
    raise TypeError(f"no message for {type(outcome).__name__}")


def _money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"
