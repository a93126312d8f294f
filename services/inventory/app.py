"""Inventory's FastStream shell: learns stock and order lines, and reserves each paid order once (or backorders it)."""

from __future__ import annotations

from datetime import UTC, datetime

from faststream import FastStream

from contracts import Envelope, InventoryBackordered, InventoryReserved, OrderPlacedV2, PaymentAuthorized, StockReceived
from fleet.runtime.broker import create_broker, publisher_for, subscriber_for, worker_app
from fleet.runtime.observe.http import attach_http
from fleet.runtime.observe.logs import decided
from fleet.runtime.stateful import attach_store
from fleet.runtime.store import Producer, Transaction

from . import core, stock
from .settings import InventorySettings

SERVICE = "inventory"


def create_app(settings: InventorySettings | None = None, *, producer: Producer | None = None) -> FastStream:
    """`producer` replaces the outbox relay's Kafka producer (in-memory tests pass one that feeds the test broker)."""
    settings = settings or InventorySettings()
    broker = create_broker(SERVICE, settings.kafka, settings.keys)
    app = worker_app(broker, SERVICE, "Reserves stock for paid orders, or backorders them; keeps stock levels.")
    state = attach_store(app, broker, settings.store_url, stock.MIGRATIONS, producer)
    attach_http(app, broker, settings, state)
    outcomes = {
        InventoryReserved: publisher_for(broker, InventoryReserved),
        InventoryBackordered: publisher_for(broker, InventoryBackordered),
    }

    async def reserve(tx: Transaction, payment: PaymentAuthorized, envelope: Envelope) -> None:
        items = await stock.items_of(tx, payment.order_id)
        if items is None:  # the order's lines travel on another topic and may come later: settle it when they do
            await stock.park_payment(tx, payment, envelope)
            decided("payment_parked", order_id=payment.order_id)
            return
        result = core.reserve(payment, items, await stock.levels(tx, core.wanted(items)), datetime.now(UTC))
        if await stock.settle_once(tx, payment.order_id, type(result.outcome).__name__, envelope.time):
            await stock.set_levels(tx, dict(result.stock_after))
            await tx.add_to_outbox(outcomes[type(result.outcome)].record(result.outcome, cause=envelope))
            decided("order_settled", order_id=payment.order_id, outcome=type(result.outcome).__name__)

    # orders.placed.v2, and v1 through its upcaster until v1 is retired.
    @subscriber_for(broker, StockReceived, OrderPlacedV2, PaymentAuthorized, group_id=settings.group_id)
    async def on_inventory_input(event: StockReceived | OrderPlacedV2 | PaymentAuthorized, envelope: Envelope) -> None:
        async with state.store.transaction() as tx:
            if not await tx.claim(settings.group_id, envelope.id):
                return
            if isinstance(event, StockReceived):
                await stock.add_stock(tx, event)
            elif isinstance(event, OrderPlacedV2):
                await stock.remember_order(tx, event)
                if parked := await stock.take_parked(tx, event.order_id):
                    await reserve(tx, *parked)
            else:
                await reserve(tx, event, envelope)

    return app
