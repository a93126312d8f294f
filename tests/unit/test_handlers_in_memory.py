"""Handlers on an in-memory broker (FastStream's TestKafkaBroker, the stores in tmp_path): the shells wire the cores to
the right topics through their outboxes, and refuse what they must."""

from faststream.kafka import TestKafkaBroker

from contracts import InventoryBackordered, InventoryReserved, NotificationSent, PaymentAuthorized, PaymentDeclined, ShipmentScheduled
from fleet.ops.demo import demo_stock
from fleet.runtime.delivery.dead_letters import MemorySink
from services.inventory import InventorySettings
from services.inventory import create_app as create_inventory
from services.notifications import NotificationsSettings
from services.notifications import create_app as create_notifications
from services.notifications.outbox import FileOutbox
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from services.shipping import ShippingSettings
from services.shipping import create_app as create_shipping
from tests.support import a_decline, a_record, an_authorization, an_order, an_order_costing, capture, in_memory


async def _send(broker, event, **kwargs):
    record = a_record(event, **kwargs)
    await broker.publish(record.value, record.topic, key=record.key.encode(), headers=record.headers)
    return record


def _store(tmp_path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}.db"


async def test_payments_authorizes_an_order_and_keys_the_outcome_by_order_id(tmp_path):
    app = in_memory(create_payments, PaymentsSettings(store_url=_store(tmp_path, "p")))
    authorized = capture(app.broker, PaymentAuthorized)
    async with TestKafkaBroker(app.broker):
        await app.start()
        order = an_order()
        sent = await _send(app.broker, order, correlation_id="flow-7")
        await app.stop()  # the relay publishes what the handler committed before it stops
    [out] = authorized
    assert out.key == order.order_id and out.event.payment_id == f"pay-{order.order_id}"
    assert out.headers["ce_correlationid"] == "flow-7"
    assert out.headers["ce_causationid"] == sent.envelope.id
    assert out.headers["ce_source"] == "/eventfleet/payments"


async def test_payments_charges_an_order_once_however_often_it_arrives(tmp_path):
    app = in_memory(create_payments, PaymentsSettings(store_url=_store(tmp_path, "p")))
    authorized = capture(app.broker, PaymentAuthorized)
    async with TestKafkaBroker(app.broker):
        await app.start()
        order = an_order()
        record = a_record(order)
        for _ in range(2):  # redelivered: the same record
            await app.broker.publish(record.value, record.topic, key=record.key.encode(), headers=record.headers)
        await _send(app.broker, order)  # republished: the same order under a new event id
        await app.stop()
    assert [a.key for a in authorized] == [order.order_id]


async def test_payments_declines_an_order_over_the_limit_on_the_declined_topic(tmp_path):
    app = in_memory(create_payments, PaymentsSettings(default_limit_cents=1000, store_url=_store(tmp_path, "p")))
    authorized, declined = capture(app.broker, PaymentAuthorized), capture(app.broker, PaymentDeclined)
    async with TestKafkaBroker(app.broker):
        await app.start()
        await _send(app.broker, an_order_costing(1001))
        await app.stop()
    assert authorized == [] and [d.event.reason for d in declined] == ["over_limit"]


async def test_a_refused_order_goes_to_the_dead_letter_topic_and_the_next_valid_one_still_gets_through(tmp_path):
    app = in_memory(create_payments, PaymentsSettings(store_url=_store(tmp_path, "p")))
    app.broker.failures.sink = dead_letters = MemorySink()
    authorized = capture(app.broker, PaymentAuthorized)
    async with TestKafkaBroker(app.broker):
        await app.start()
        good = a_record(an_order())
        await app.broker.publish(good.value + b" ", good.topic, key=good.key.encode(), headers=good.headers)
        await app.broker.publish(good.value, good.topic, key=good.key.encode(), headers={})
        await _send(app.broker, an_order(order_id="ord-after"))
        await app.stop()
    assert [a.key for a in authorized] == ["ord-after"]
    assert [(topic, headers["dlq-reason"]) for topic, _, _, headers in dead_letters.sent] == [
        ("orders.placed.v1.dlq", "bad_signature"),
        ("orders.placed.v1.dlq", "missing_header"),
    ]
    assert app.broker.failures.counts == {("orders.placed.v1", "bad_signature"): 1, ("orders.placed.v1", "missing_header"): 1}


async def test_notifications_records_each_message_once_and_says_so(tmp_path):
    settings = NotificationsSettings(outbox_path=tmp_path / "outbox.jsonl", store_url=_store(tmp_path, "n"))
    app = in_memory(create_notifications, settings)
    sent = capture(app.broker, NotificationSent)
    async with TestKafkaBroker(app.broker):
        await app.start()
        authorization = a_record(an_authorization(an_order()), service="payments")
        for _ in range(2):
            await app.broker.publish(authorization.value, authorization.topic, key=authorization.key.encode(), headers=authorization.headers)
        await _send(app.broker, a_decline(an_order(), reason="unsupported_currency"), service="payments")
        await app.stop()
    assert [s.event.template for s in sent] == ["payment_authorized", "payment_declined"]
    assert [line["template"] for line in FileOutbox(settings.outbox_path).read()] == ["payment_authorized", "payment_declined"]


async def test_notifications_puts_a_recorded_message_a_crash_kept_out_of_the_feed_back_in_once(tmp_path):
    settings = NotificationsSettings(outbox_path=tmp_path / "outbox.jsonl", store_url=_store(tmp_path, "n"))
    app = in_memory(create_notifications, settings)
    async with TestKafkaBroker(app.broker):
        await app.start()
        await _send(app.broker, an_authorization(an_order()), service="payments")
        await app.stop()
    feed = FileOutbox(settings.outbox_path)
    written = feed.read()
    settings.outbox_path.write_text("")  # as if the worker died between its commit and the append
    for _ in range(2):  # the next start puts the line back, and the one after adds nothing
        restarted = in_memory(create_notifications, settings)
        async with TestKafkaBroker(restarted.broker):
            await restarted.start()
            await restarted.stop()
    assert feed.read() == written


async def test_inventory_reserves_a_paid_order_from_received_stock_and_backorders_what_it_lacks(tmp_path):
    app = in_memory(create_inventory, InventorySettings(store_url=_store(tmp_path, "i")))
    reserved, backordered = capture(app.broker, InventoryReserved), capture(app.broker, InventoryBackordered)
    small = an_order(lines=(("SKU-TEA-001", 2, 1250),))
    large = an_order(lines=(("SKU-ESPRESSO-006", 9, 64900),))
    async with TestKafkaBroker(app.broker):
        await app.start()
        for delivery in demo_stock():
            await _send(app.broker, delivery, service="warehouse")
        for order in (small, large):
            await _send(app.broker, order)
            await _send(app.broker, an_authorization(order), service="payments")
        await app.stop()
    assert [r.key for r in reserved] == [small.order_id]
    assert [(b.key, b.event.missing[0].sku) for b in backordered] == [(large.order_id, "SKU-ESPRESSO-006")]


async def test_shipping_books_one_shipment_per_reservation(tmp_path):
    from datetime import datetime, timezone

    from contracts import StockLine

    app = in_memory(create_shipping, ShippingSettings(store_url=_store(tmp_path, "s")))
    shipments = capture(app.broker, ShipmentScheduled)
    reservation = InventoryReserved(order_id="ord-s1", customer_id="cus-1", reservation_id="rsv-ord-s1",
                                    items=(StockLine(sku="SKU-TEA-001", quantity=2),), reserved_at=datetime.now(timezone.utc))
    async with TestKafkaBroker(app.broker):
        await app.start()
        await _send(app.broker, reservation, service="inventory")
        await _send(app.broker, reservation, service="inventory")  # republished with a new event id
        await app.stop()
    assert [(s.key, s.event.carrier, s.event.units) for s in shipments] == [("ord-s1", "parcel", 2)]


async def test_inventory_settles_a_payment_heard_before_its_order_once_the_order_arrives(tmp_path):
    app = in_memory(create_inventory, InventorySettings(store_url=_store(tmp_path, "i")))
    reserved = capture(app.broker, InventoryReserved)
    order = an_order(lines=(("SKU-TEA-001", 2, 1250),))
    async with TestKafkaBroker(app.broker):
        await app.start()
        for delivery in demo_stock():
            await _send(app.broker, delivery, service="warehouse")
        payment = await _send(app.broker, an_authorization(order), service="payments")  # its order's lines come later
        await _send(app.broker, order)
        await _send(app.broker, order)  # republished: settles nothing twice
        await app.stop()
    [out] = reserved
    assert out.key == order.order_id and out.headers["ce_causationid"] == payment.envelope.id
