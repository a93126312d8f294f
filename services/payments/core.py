"""Payments' decisions, pure: authorize an order or decline it, and say by which rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

from contracts import OrderPlaced, OrderPlacedV2, PaymentAuthorized, PaymentDeclined

__all__ = ["CreditPolicy", "decide", "payment_id_for"]


@dataclass(frozen=True)
class CreditPolicy:
    """The rules: accepted currencies, and how much one order of a customer may cost
    (a default and per-customer limits)."""

    default_limit_cents: int = 100_000
    customer_limits: Mapping[str, int] = field(default_factory=dict)
    currencies: frozenset[str] = frozenset({"EUR", "USD", "GBP"})

    def limit_for(self, customer_id: str) -> int:
        return self.customer_limits.get(customer_id, self.default_limit_cents)


def payment_id_for(order: OrderPlaced | OrderPlacedV2) -> str:
    """Derived from the order, so the same order always yields the same payment id."""
    return f"pay-{order.order_id}"


def decide(
    order: OrderPlaced | OrderPlacedV2, policy: CreditPolicy, now: datetime
) -> PaymentAuthorized | PaymentDeclined:
    """Declines, in this order: a total that is not the sum of its lines, a currency not accepted,
    a total over the customer's limit.

    Everything else is authorized for the order's total.
    """
    reason = _decline_reason(order, policy)
    if reason:
        return PaymentDeclined(
            order_id=order.order_id,
            customer_id=order.customer_id,
            amount_cents=order.total_cents,
            currency=order.currency,
            reason=reason,
            declined_at=now,
        )
    return PaymentAuthorized(
        order_id=order.order_id,
        customer_id=order.customer_id,
        payment_id=payment_id_for(order),
        amount_cents=order.total_cents,
        currency=order.currency,
        authorized_at=now,
    )


def _decline_reason(order: OrderPlaced | OrderPlacedV2, policy: CreditPolicy) -> str | None:
    if order.total_cents != sum(item.quantity * item.unit_price_cents for item in order.items):
        return "total_mismatch"
    if order.currency not in policy.currencies:
        return "unsupported_currency"
    if order.total_cents > policy.limit_for(order.customer_id):
        return "over_limit"
    return None
