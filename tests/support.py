"""Helpers shared by every test: event factories and raw-record builders (one place, so tests read as sentences)."""


import uuid
from typing import Any
from dataclasses import dataclass
from datetime import datetime, timezone

from contracts import OrderItem, OrderPlaced, PaymentAuthorized, PaymentDeclined, Record, encode, source_of

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


def a_record(event, *, service: str = "storefront", correlation_id: str | None = None) -> Record:
    return encode(event, source=source_of(service), correlation_id=correlation_id)


def raw_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    """Headers as Kafka delivers them: a list of (name, bytes)."""
    return [(name, value.encode("utf-8")) for name, value in headers.items()]


@dataclass(frozen=True)
class FakeRecord:
    """The few ConsumerRecord fields our code reads, for pure tests."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list
    timestamp: int = 0


@dataclass
class Captured:
    """An event some handler published, as it would travel: key, headers, decoded event."""

    key: str
    headers: dict
    event: object


def capture(broker, model) -> list[Captured]:
    """Registers a listener on the topic of `model` on an in-memory broker; returns the list it fills."""
    from faststream.kafka import KafkaMessage

    from contracts import REGISTRY, decode_value

    topic = REGISTRY.of(model)
    seen: list[Captured] = []

    @broker.subscriber(topic.name, group_id=f"capture-{topic.name}")
    async def listener(body: Any, message: KafkaMessage) -> None:
        raw = message.raw_message
        headers = {k: v.decode() for k, v in raw.headers}
        seen.append(Captured(raw.key.decode(), headers, decode_value(topic, raw.value)))

    return seen
