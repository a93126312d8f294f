"""Notifications' FastStream shell: hears each outcome the customer should know of, records the message once.

Then it says so: it publishes that the notification was sent."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import structlog
from faststream import FastStream

from contracts import (
    Envelope,
    InventoryBackordered,
    NotificationSent,
    OrderPlacedV2,
    PaymentAuthorized,
    PaymentDeclined,
    ShipmentScheduled,
)
from fleet.runtime.broker import create_broker, publisher_for, subscriber_for, worker_app
from fleet.runtime.observe.http import attach_http
from fleet.runtime.observe.logs import decided
from fleet.runtime.stateful import attach_store
from fleet.runtime.store import Producer

from . import core, records
from .outbox import FileOutbox
from .settings import NotificationsSettings

SERVICE = "notifications"
log = structlog.get_logger(SERVICE)


def create_app(settings: NotificationsSettings | None = None, *, producer: Producer | None = None) -> FastStream:
    """`producer` replaces the outbox relay's Kafka producer (in-memory tests pass one that feeds the test broker)."""
    settings = settings or NotificationsSettings()
    delivery_log = FileOutbox(settings.outbox_path)
    broker = create_broker(SERVICE, settings.kafka, settings.keys)
    app = worker_app(broker, SERVICE, "Tells customers what happened to their order: payment, backorder, shipment.")
    state = attach_store(app, broker, settings.store_url, records.MIGRATIONS, producer)
    attach_http(app, broker, settings, state)
    to_notification_sent = publisher_for(broker, NotificationSent)

    # The order itself (v2, and v1 through its upcaster) only says where it was placed: the text names it.
    @subscriber_for(
        broker,
        OrderPlacedV2,
        PaymentAuthorized,
        PaymentDeclined,
        InventoryBackordered,
        ShipmentScheduled,
        group_id=settings.group_id,
    )
    async def on_order_outcome(
        event: OrderPlacedV2 | PaymentAuthorized | PaymentDeclined | InventoryBackordered | ShipmentScheduled,
        envelope: Envelope,
    ) -> None:
        if isinstance(event, OrderPlacedV2):
            async with state.store.transaction() as tx:
                if await tx.claim(settings.group_id, envelope.id):
                    await records.remember_channel(tx, event.order_id, event.channel)
            decided("order_channel_remembered", order_id=event.order_id, channel=event.channel)
            return
        outcome = event
        async with state.store.transaction() as tx:
            # The order travels on another topic and may come later: then the text names no channel.
            channel = await records.channel_of(tx, outcome.order_id)
            notification = core.compose(outcome, now=datetime.now(UTC), placed_through=channel)
            first = await tx.claim(settings.group_id, envelope.id) and await records.record_once(tx, notification)
            if first:
                await tx.add_to_outbox(to_notification_sent.record(notification.sent, cause=envelope))
                # The mail system's feed gets the line once the notification is committed (with a batch: once the
                # batch is), and the feed syncs to disk once per commit, not once per line.
                tx.after_commit(functools.partial(delivery_log.stage, notification.as_outbox_line()))
                tx.after_commit(delivery_log.flush)
        if first:
            decided("notification_recorded", order_id=outcome.order_id, template=notification.sent.template)

    @app.on_startup
    async def feed_what_a_crash_left_out() -> None:
        # A crash between the commit and the append leaves a recorded notification out of the feed: append it now.
        fed = delivery_log.ids()
        async with state.store.transaction() as tx:
            missing = [line for line in await records.feed_lines(tx) if line["notification_id"] not in fed]
        for line in missing:
            delivery_log.append(line)
        if missing:
            log.warning("feed_caught_up", lines=len(missing))

    return app
