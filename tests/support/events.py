"""Event factories: valid orders, payment outcomes and the signed records a publisher would send, so tests read as sentences."""

import json
import os
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from contracts import (
    OrderItem,
    OrderPlaced,
    OrderPlacedV2,
    PaymentAuthorized,
    PaymentDeclined,
    Record,
    encode,
    sign,
    source_of,
)

NOW = datetime(2026, 11, 24, 16, 0, tzinfo=timezone.utc)


def unique_order_id(prefix: str = "ord-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def an_order(
    *,
    order_id: str | None = None,
    customer_id: str = "cus-1042",
    lines: tuple[tuple[str, int, int], ...] = (("SKU-TEA-001", 2, 1250),),
    currency: str = "EUR",
    total_cents: int | None = None,
) -> OrderPlaced:
    """A valid order; `lines` are (sku, quantity, unit price in cents); the total is their sum unless given."""
    items = tuple(OrderItem(sku=s, quantity=q, unit_price_cents=p) for s, q, p in lines)
    return OrderPlaced(
        order_id=order_id or unique_order_id(),
        customer_id=customer_id,
        items=items,
        currency=currency,
        total_cents=sum(q * p for _, q, p in lines) if total_cents is None else total_cents,
        placed_at=NOW,
    )


def an_order_v2(*, channel: str = "web", **kwargs) -> OrderPlacedV2:
    """A valid order of orders.placed.v2 (what the storefront publishes since v2): `an_order`'s fields and a channel."""
    return OrderPlacedV2(**dict(an_order(**kwargs)), channel=channel)


def an_order_costing(cents: int, **kwargs) -> OrderPlaced:
    return an_order(lines=(("SKU-ESPRESSO-006", 1, cents),), **kwargs)


def an_authorization(order: OrderPlaced | None = None) -> PaymentAuthorized:
    order = order or an_order()
    return PaymentAuthorized(
        order_id=order.order_id, customer_id=order.customer_id, payment_id=f"pay-{order.order_id}",
        amount_cents=order.total_cents, currency=order.currency, authorized_at=NOW,
    )


def a_decline(order: OrderPlaced | None = None, reason: str = "over_limit") -> PaymentDeclined:
    order = order or an_order()
    return PaymentDeclined(
        order_id=order.order_id, customer_id=order.customer_id, amount_cents=order.total_cents,
        currency=order.currency, reason=reason, declined_at=NOW,
    )


def signer_of(signer: str = "storefront"):
    """The current private key of one of the run's dev signers (tests/conftest.py made them)."""
    from fleet.runtime.keys import KeyStore

    return KeyStore.for_signer(Path(os.environ["FLEET_KEYS_DIR"]), signer).signer()


def a_record(event, *, service: str = "storefront", correlation_id: str | None = None, signer=None, now=None) -> Record:
    """The signed record a publisher would send; by default signed with the storefront's dev key."""
    return encode(event, source=source_of(service), signer=signer or signer_of(service), correlation_id=correlation_id, now=now)


def a_record_that_is_not_a_valid_order(*, order_id: str | None = None, service: str = "storefront") -> Record:
    """A poison record of orders.placed.v1 that passes every check but its model's: keyed and signed correctly (the
    signature covers its value), whose value is only an order id. A worker dead-letters it as `invalid_payload`."""
    order = a_record(an_order(order_id=order_id), service=service)
    return sign(replace(order, value=json.dumps({"order_id": order.key}).encode()), signer_of(service))
