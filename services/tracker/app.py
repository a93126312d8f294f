"""The tracker's FastStream shell: hears every event of the order flow and folds it, once, into the order's status."""

from __future__ import annotations

import typing

from faststream import FastStream

from contracts import Envelope
from fleet.runtime.broker import create_broker, subscriber_for, worker_app
from fleet.runtime.observe.http import attach_http
from fleet.runtime.observe.logs import decided
from fleet.runtime.stateful import attach_store
from fleet.runtime.store import Transaction

from . import core, queries
from .core import OrderEvent
from .settings import TrackerSettings

__all__ = ["SERVICE", "OrderEvent", "create_app", "track"]

SERVICE = "tracker"


def create_app(settings: TrackerSettings | None = None) -> FastStream:
    settings = settings or TrackerSettings()
    broker = create_broker(SERVICE, settings.kafka, settings.keys)
    app = worker_app(
        broker, SERVICE, "Keeps each order's status and history, folded from every event of its flow (the read side)."
    )
    state = attach_store(app, broker, settings.store_url, queries.MIGRATIONS)
    attach_http(app, broker, settings, state)

    # One subscriber for the whole flow: one group member per replica, and one place that folds.
    @subscriber_for(broker, *typing.get_args(OrderEvent), group_id=settings.group_id)
    async def on_order_event(event: OrderEvent, envelope: Envelope) -> None:
        async with state.store.transaction() as tx:
            status = await track(tx, settings.group_id, event, envelope)
        if status is None:
            decided("event_already_tracked", order_id=event.order_id)
        else:
            decided("order_status_tracked", order_id=event.order_id, status=status.status)

    return app


async def track(tx: Transaction, group_id: str, event: OrderEvent, envelope: Envelope) -> core.OrderStatus | None:
    """Folds one event into its order's status, in the caller's transaction;
    None when the group had tracked it already."""
    if not await tx.claim(group_id, envelope.id):
        return None
    status = core.apply(await queries.load(tx, event.order_id), event, envelope)
    await queries.save(tx, status)
    return status
