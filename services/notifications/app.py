"""Notifications' FastStream shell: hears each payment outcome, records the customer's message, publishes NotificationSent."""

from __future__ import annotations

from datetime import datetime, timezone

import structlog
from faststream import Context, FastStream

from contracts import Envelope, NotificationSent, PaymentAuthorized, PaymentDeclined
from fleet.broker import create_broker, publisher_for, subscriber_for, worker_app

from . import core
from .outbox import FileOutbox
from .settings import NotificationsSettings

SERVICE = "notifications"
log = structlog.get_logger(SERVICE)


def create_app(settings: NotificationsSettings | None = None) -> FastStream:
    settings = settings or NotificationsSettings()
    outbox = FileOutbox(settings.outbox_path)
    broker = create_broker(SERVICE, settings.kafka, settings.keys)
    to_notification_sent = publisher_for(broker, NotificationSent)

    @subscriber_for(broker, PaymentAuthorized, PaymentDeclined, group_id=settings.group_id)
    async def on_payment_outcome(payment: PaymentAuthorized | PaymentDeclined, envelope: Envelope = Context()) -> None:
        notification = core.compose(payment, now=datetime.now(timezone.utc))
        outbox.append(notification.as_outbox_line())
        log.info("notification_recorded", order_id=payment.order_id, template=notification.sent.template)
        await to_notification_sent.emit(notification.sent, cause=envelope)

    return worker_app(broker, SERVICE, "Tells customers what happened to their payment.")
