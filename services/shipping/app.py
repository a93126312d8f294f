"""Shipping's FastStream shell: books one shipment per reserved order and says so."""

from __future__ import annotations

from datetime import UTC, datetime

from faststream import FastStream

from contracts import Envelope, InventoryReserved, ShipmentScheduled
from fleet.runtime.broker import create_broker, publisher_for, subscriber_for, worker_app
from fleet.runtime.observe.http import attach_http
from fleet.runtime.observe.logs import decided
from fleet.runtime.stateful import attach_store
from fleet.runtime.store import Producer

from . import core
from .settings import ShippingSettings

SERVICE = "shipping"
MIGRATIONS = [
    "CREATE TABLE IF NOT EXISTS shipments (order_id TEXT PRIMARY KEY, shipment_id TEXT NOT NULL, "
    "carrier TEXT NOT NULL, ship_by TEXT NOT NULL)"
]


def create_app(settings: ShippingSettings | None = None, *, producer: Producer | None = None) -> FastStream:
    """`producer` replaces the outbox relay's Kafka producer (in-memory tests pass one that feeds the test broker)."""
    settings = settings or ShippingSettings()
    broker = create_broker(SERVICE, settings.kafka, settings.keys)
    app = worker_app(broker, SERVICE, "Books a shipment for every reserved order.")
    state = attach_store(app, broker, settings.store_url, MIGRATIONS, producer)
    attach_http(app, broker, settings, state)
    to_shipment_scheduled = publisher_for(broker, ShipmentScheduled)

    @subscriber_for(broker, InventoryReserved, group_id=settings.group_id)
    async def on_inventory_reserved(reservation: InventoryReserved, envelope: Envelope) -> None:
        shipment = core.schedule(reservation, now=datetime.now(UTC))
        async with state.store.transaction() as tx:
            if not await tx.claim(settings.group_id, envelope.id):
                return
            booked = await tx.execute(
                "INSERT INTO shipments (order_id, shipment_id, carrier, ship_by) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (order_id) DO NOTHING",
                (shipment.order_id, shipment.shipment_id, shipment.carrier, shipment.ship_by.isoformat()),
            )
            if booked:
                await tx.add_to_outbox(to_shipment_scheduled.record(shipment, cause=envelope))
        decided("shipment_scheduled", order_id=shipment.order_id, carrier=shipment.carrier, new=bool(booked))

    return app
