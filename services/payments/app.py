"""Payments' FastStream shell: hears each OrderPlaced, asks the core, publishes the authorization or the decline."""

from __future__ import annotations

from datetime import datetime, timezone

import structlog
from faststream import Context, FastStream

from contracts import Envelope, OrderPlaced, PaymentAuthorized, PaymentDeclined
from fleet.broker import create_broker, publisher_for, subscriber_for, worker_app

from . import core
from .settings import PaymentsSettings

SERVICE = "payments"
log = structlog.get_logger(SERVICE)


def create_app(settings: PaymentsSettings | None = None) -> FastStream:
    settings = settings or PaymentsSettings()
    policy = settings.credit_policy()
    broker = create_broker(SERVICE, settings.kafka, settings.keys)
    to_payment_authorized = publisher_for(broker, PaymentAuthorized)
    to_payment_declined = publisher_for(broker, PaymentDeclined)

    @subscriber_for(broker, OrderPlaced, group_id=settings.group_id)
    async def on_order_placed(order: OrderPlaced, envelope: Envelope = Context()) -> None:
        outcome = core.decide(order, policy, now=datetime.now(timezone.utc))
        if isinstance(outcome, PaymentAuthorized):
            log.info("payment_authorized", order_id=order.order_id, amount_cents=outcome.amount_cents)
            await to_payment_authorized.emit(outcome, cause=envelope)
        else:
            log.info("payment_declined", order_id=order.order_id, reason=outcome.reason)
            await to_payment_declined.emit(outcome, cause=envelope)

    return worker_app(broker, SERVICE, "Authorizes or declines each placed order.")
