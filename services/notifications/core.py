"""Notifications' decisions, pure: what to tell the customer about a payment outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts import NotificationSent, PaymentAuthorized, PaymentDeclined

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


def compose(outcome: PaymentAuthorized | PaymentDeclined, now: datetime) -> Notification:
    """An email for the customer; its id is derived from order and template, so a redelivery yields the same one."""
    if isinstance(outcome, PaymentAuthorized):
        template = "payment_authorized"
        subject = f"Order {outcome.order_id}: payment confirmed"
        body = f"We received {_money(outcome.amount_cents, outcome.currency)} for order {outcome.order_id}."
    else:
        template = "payment_declined"
        subject = f"Order {outcome.order_id}: payment declined"
        body = f"We could not take {_money(outcome.amount_cents, outcome.currency)} for order {outcome.order_id}: {DECLINE_EXPLANATIONS[outcome.reason]}."
    sent = NotificationSent(
        notification_id=f"ntf-{outcome.order_id}-{template}",
        order_id=outcome.order_id,
        customer_id=outcome.customer_id,
        channel="email",
        template=template,
        sent_at=now,
    )
    return Notification(subject=subject, body=body, sent=sent)


def _money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"
