"""`fleet watch`: every event on the registry's topics as one readable line, with its key and correlation id."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import (
    REGISTRY,
    Envelope,
    EnvelopeError,
    Event,
    InvalidPayload,
    InventoryBackordered,
    InventoryReserved,
    NotificationSent,
    OrderPlaced,
    OrderPlacedV2,
    PaymentAuthorized,
    PaymentDeclined,
    Registry,
    ShipmentScheduled,
    StockReceived,
    decode_value,
)
from contracts.connection import KafkaConnection, client_options
from fleet.ops.topics import partitions_of

__all__ = ["describe", "format_line", "watch_events"]


def _money(cents: int, currency: str) -> str:
    return f"{cents / 100:,.2f} {currency}"


def describe(event: Event) -> str:
    """A few words that say what happened."""
    match event:
        case OrderPlacedV2():
            units = sum(i.quantity for i in event.items)
            total = _money(event.total_cents, event.currency)
            return f"{event.customer_id} ordered {units} item(s) for {total} ({event.channel})"
        case OrderPlaced():
            units = sum(i.quantity for i in event.items)
            return f"{event.customer_id} ordered {units} item(s) for {_money(event.total_cents, event.currency)}"
        case PaymentAuthorized():
            return f"authorized {_money(event.amount_cents, event.currency)} ({event.payment_id})"
        case PaymentDeclined():
            return f"declined {_money(event.amount_cents, event.currency)}: {event.reason}"
        case NotificationSent():
            return f"{event.channel} '{event.template}' to {event.customer_id}"
        case StockReceived():
            return f"received {event.quantity} × {event.sku}"
        case InventoryReserved():
            return f"reserved {sum(line.quantity for line in event.items)} unit(s) ({event.reservation_id})"
        case InventoryBackordered():
            return "backordered: " + ", ".join(f"{m.sku} {m.available}/{m.requested}" for m in event.missing)
        case ShipmentScheduled():
            return f"{event.carrier} with {event.units} unit(s) leaves {event.ship_by}"
    return type(event).__name__


def format_line(record_timestamp_ms: int, topic: str, key: str, envelope: Envelope | None, text: str) -> str:
    """`16:20:01.123  payments.declined.v1    ord-1a2b3c4d5e6f  declined 649.00 EUR: over_limit   corr=01a20e53-...`."""
    moment = datetime.fromtimestamp(record_timestamp_ms / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
    correlation = envelope.correlation_id if envelope else "-"
    return f"{moment}  {topic:<23} {key:<17} {text:<52} corr={correlation}"


def _line_for(record, registry: Registry) -> str:
    key = record.key.decode("utf-8", "replace") if record.key else "-"
    try:
        envelope = Envelope.from_headers(record.headers or ())
        text = describe(decode_value(registry.named(record.topic), record.value))
    except (EnvelopeError, InvalidPayload) as error:
        return format_line(record.timestamp, record.topic, key, None, f"INVALID: {error}")
    return format_line(record.timestamp, record.topic, key, envelope, text)


async def watch_events(
    bootstrap_servers: str | KafkaConnection,
    emit: Callable[[str], None],
    stop: asyncio.Event,
    *,
    from_beginning: bool = False,
    registry: Registry = REGISTRY,
    ready: asyncio.Event | None = None,
) -> None:
    """Reads every partition of every registry topic (no consumer group, so it never disturbs the fleet)."""
    counts = await partitions_of(bootstrap_servers, [t.name for t in registry])
    partitions = [TopicPartition(name, p) for name, count in sorted(counts.items()) for p in range(count)]
    if not partitions:
        raise RuntimeError("none of the registry's topics exist yet: run `fleet topics apply`")
    consumer = AIOKafkaConsumer(**client_options(bootstrap_servers), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*partitions)
        for partition in partitions:
            await consumer.position(partition)  # resolves the seek now, so `ready` means nothing later is missed
        if ready:
            ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for record in sorted((r for rs in batches.values() for r in rs), key=lambda r: r.timestamp):
                emit(_line_for(record, registry))
    finally:
        await consumer.stop()
