"""Handlers on an in-memory broker (FastStream's TestKafkaBroker): the shells wire the cores to the right topics."""

from faststream.kafka import TestKafkaBroker

from contracts import NotificationSent, PaymentAuthorized, PaymentDeclined
from fleet.rejects import MemorySink
from services.notifications import NotificationsSettings
from services.notifications import create_app as create_notifications
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import a_decline, a_record, an_authorization, an_order, an_order_costing, capture


async def _send(broker, event, **kwargs):
    record = a_record(event, **kwargs)
    await broker.publish(record.value, record.topic, key=record.key.encode(), headers=record.headers)
    return record


async def test_payments_authorizes_an_order_and_keys_the_outcome_by_order_id():
    broker = create_payments(PaymentsSettings()).broker
    authorized = capture(broker, PaymentAuthorized)
    async with TestKafkaBroker(broker):
        order = an_order()
        sent = await _send(broker, order, correlation_id="flow-7")
    [out] = authorized
    assert out.key == order.order_id and out.event.payment_id == f"pay-{order.order_id}"
    assert out.headers["ce_correlationid"] == "flow-7"
    assert out.headers["ce_causationid"] == sent.envelope.id
    assert out.headers["ce_source"] == "/eventfleet/payments"


async def test_payments_declines_an_order_over_the_limit_on_the_declined_topic():
    broker = create_payments(PaymentsSettings(default_limit_cents=1000)).broker
    authorized, declined = capture(broker, PaymentAuthorized), capture(broker, PaymentDeclined)
    async with TestKafkaBroker(broker):
        await _send(broker, an_order_costing(1001))
    assert authorized == [] and [d.event.reason for d in declined] == ["over_limit"]


async def test_a_refused_order_goes_to_the_dead_letter_topic_and_the_next_valid_one_still_gets_through():
    broker = create_payments(PaymentsSettings()).broker
    broker.dead_letters.sink = dead_letters = MemorySink()
    authorized = capture(broker, PaymentAuthorized)
    async with TestKafkaBroker(broker):
        good = a_record(an_order())
        await broker.publish(good.value + b" ", good.topic, key=good.key.encode(), headers=good.headers)
        await broker.publish(good.value, good.topic, key=good.key.encode(), headers={})
        await _send(broker, an_order(order_id="ord-after"))
    assert [a.key for a in authorized] == ["ord-after"]
    assert [(topic, headers["dlq-reason"]) for topic, _, _, headers in dead_letters.sent] == [
        ("orders.placed.v1.dlq", "bad_signature"),
        ("orders.placed.v1.dlq", "missing_header"),
    ]
    assert broker.dead_letters.counts == {("orders.placed.v1", "bad_signature"): 1, ("orders.placed.v1", "missing_header"): 1}


async def test_notifications_records_a_message_and_says_so(tmp_path):
    settings = NotificationsSettings(outbox_path=tmp_path / "outbox.jsonl")
    broker = create_notifications(settings).broker
    sent = capture(broker, NotificationSent)
    async with TestKafkaBroker(broker):
        order = an_order()
        await _send(broker, an_authorization(order), service="payments")
        await _send(broker, a_decline(an_order(), reason="unsupported_currency"), service="payments")
    assert [s.event.template for s in sent] == ["payment_authorized", "payment_declined"]
    lines = [line["template"] for line in __import__("services.notifications.outbox", fromlist=["FileOutbox"]).FileOutbox(settings.outbox_path).read()]
    assert lines == ["payment_authorized", "payment_declined"]
