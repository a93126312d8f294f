"""Payments' FastStream shell: hears each OrderPlaced, asks the core, and charges at most once per order.

At most once: through its ledger, its inbox and its outbox."""

from __future__ import annotations

from datetime import UTC, datetime

from faststream import FastStream

from contracts import Envelope, OrderPlacedV2, PaymentAuthorized, PaymentDeclined
from fleet.runtime.broker import create_broker, publisher_for, subscriber_for, worker_app
from fleet.runtime.observe.http import attach_http
from fleet.runtime.observe.logs import decided
from fleet.runtime.stateful import attach_store
from fleet.runtime.store import Producer

from . import core, ledger
from .settings import PaymentsSettings

SERVICE = "payments"


def create_app(settings: PaymentsSettings | None = None, *, producer: Producer | None = None) -> FastStream:
    """`producer` replaces the outbox relay's Kafka producer (in-memory tests pass one that feeds the test broker)."""
    settings = settings or PaymentsSettings()
    policy = settings.credit_policy()
    broker = create_broker(SERVICE, settings.kafka, settings.keys)
    app = worker_app(broker, SERVICE, "Authorizes or declines each placed order; charges each order at most once.")
    state = attach_store(app, broker, settings.store_url, ledger.MIGRATIONS, producer)
    attach_http(app, broker, settings, state)
    to_payment_authorized = publisher_for(broker, PaymentAuthorized)
    to_payment_declined = publisher_for(broker, PaymentDeclined)

    # orders.placed.v2, and v1 through its upcaster (channel `web`) until v1 is retired.
    @subscriber_for(broker, OrderPlacedV2, group_id=settings.group_id)
    async def on_order_placed(order: OrderPlacedV2, envelope: Envelope) -> None:
        async with state.store.transaction() as tx:
            if not await tx.claim(settings.group_id, envelope.id) or await ledger.charge_for(tx, order.order_id):
                decided("order_already_decided", order_id=order.order_id)
                return
            outcome = core.decide(order, policy, now=datetime.now(UTC))
            if isinstance(outcome, PaymentAuthorized):
                await ledger.record_charge(tx, outcome)
                await tx.add_to_outbox(to_payment_authorized.record(outcome, cause=envelope))
            else:
                await tx.add_to_outbox(to_payment_declined.record(outcome, cause=envelope))
        decided(
            "payment_decided",
            order_id=order.order_id,
            outcome=type(outcome).__name__,
            reason=getattr(outcome, "reason", None),
        )

    return app
