"""orders.placed.v1 and v2 side by side on an in-memory broker (FastStream's TestKafkaBroker, the stores in tmp_path):
one handler, declared on OrderPlacedV2, decides both; a v1 order reaches it upcast (channel `web`), while the log line
keeps the record's own topic and type; notifications name the order's channel once they heard the order."""

import structlog
from faststream.kafka import TestKafkaBroker

from contracts import REGISTRY, NotificationSent, OrderPlaced, OrderPlacedV2, PaymentAuthorized, PaymentDeclined
from fleet.runtime.broker import create_broker, subscriber_for
from fleet.runtime.observe.logs import merge_event_context
from fleet.runtime.settings import KafkaSettings
from services.notifications import NotificationsSettings
from services.notifications import create_app as create_notifications
from services.notifications.outbox import FileOutbox
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import a_record, an_authorization, an_order, an_order_costing, an_order_v2, capture, in_memory

V1, V2 = REGISTRY.of(OrderPlaced), REGISTRY.of(OrderPlacedV2)


async def _send(broker, event, **kwargs):
    record = a_record(event, **kwargs)
    await broker.publish(record.value, record.topic, key=record.key.encode(), headers=record.headers)
    return record


def _store(tmp_path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}.db"


def _order_subscribers(broker) -> list:
    return [s for s in broker.subscribers if {V1.name, V2.name} & set(getattr(s, "topic_names_for_subscribe", []))]


async def test_a_handler_declared_on_v2_is_handed_v2_orders_for_the_records_of_both_topics():
    broker = create_broker("payments", KafkaSettings())
    handed: list = []

    async def on_order_placed(order: OrderPlacedV2) -> None:
        handed.append(order)

    subscriber_for(broker, OrderPlacedV2, group_id="versions")(on_order_placed)
    old, new = an_order(order_id="ord-old"), an_order_v2(order_id="ord-new", channel="phone")
    async with TestKafkaBroker(broker):
        await _send(broker, old)
        await _send(broker, new)
    assert [type(order) for order in handed] == [OrderPlacedV2, OrderPlacedV2]
    assert handed == [an_order_v2(order_id="ord-old", channel="web"), new]
    [subscriber] = _order_subscribers(broker)
    assert {V1.name, V2.name} <= set(subscriber.topic_names_for_subscribe)


async def test_payments_decides_a_v1_and_a_v2_order_with_its_one_handler_and_logs_each_as_its_own_topic(tmp_path):
    app = in_memory(create_payments, PaymentsSettings(default_limit_cents=10_000, store_url=_store(tmp_path, "p")))
    authorized, declined = capture(app.broker, PaymentAuthorized), capture(app.broker, PaymentDeclined)
    small_v1, large_v1 = an_order_costing(5_000), an_order_costing(50_000)
    small_v2 = an_order_v2(channel="store", lines=(("SKU-ESPRESSO-006", 1, 5_000),))
    large_v2 = an_order_v2(channel="phone", lines=(("SKU-ESPRESSO-006", 1, 50_000),))
    with structlog.testing.capture_logs(processors=[merge_event_context]) as lines:
        async with TestKafkaBroker(app.broker):
            await app.start()
            sent = {order.order_id: await _send(app.broker, order) for order in (small_v1, small_v2, large_v1, large_v2)}
            await app.stop()
    [subscriber] = _order_subscribers(app.broker)  # one subscriber, one handler, both topics
    assert {V1.name, V2.name} <= set(subscriber.topic_names_for_subscribe) and len(subscriber.calls) == 1
    assert [a.key for a in authorized] == [small_v1.order_id, small_v2.order_id]
    assert [(d.key, d.event.reason) for d in declined] == [(large_v1.order_id, "over_limit"), (large_v2.order_id, "over_limit")]
    # A v1 order is decided as the same order of v2 would be: the same payment id, amount and currency.
    assert authorized[0].event.model_dump(exclude={"order_id", "payment_id", "authorized_at"}) == \
        authorized[1].event.model_dump(exclude={"order_id", "payment_id", "authorized_at"})
    assert authorized[0].headers["ce_causationid"] == sent[small_v1.order_id].envelope.id
    handled = {line["event_id"]: line for line in lines if line["event"] == "event_handled"}
    assert {(handled[r.envelope.id]["topic"], handled[r.envelope.id]["event_type"]) for r in sent.values()} == {
        (V1.name, V1.type_name), (V2.name, V2.type_name)
    }
    assert [handled[sent[o.order_id].envelope.id]["topic"] for o in (small_v1, small_v2, large_v1, large_v2)] == [
        V1.name, V2.name, V1.name, V2.name
    ]


async def test_payments_decides_an_order_once_whichever_version_of_it_comes_again(tmp_path):
    app = in_memory(create_payments, PaymentsSettings(store_url=_store(tmp_path, "p")))
    authorized = capture(app.broker, PaymentAuthorized)
    order = an_order()
    async with TestKafkaBroker(app.broker):
        await app.start()
        await _send(app.broker, order)
        await _send(app.broker, an_order_v2(order_id=order.order_id, channel="store"))  # the storefront republished it as v2
        await app.stop()
    assert [a.key for a in authorized] == [order.order_id]


def _notifications(tmp_path):
    settings = NotificationsSettings(outbox_path=tmp_path / "outbox.jsonl", store_url=_store(tmp_path, "n"))
    return settings, in_memory(create_notifications, settings)


async def test_notifications_name_the_channel_of_an_order_they_heard_and_none_for_an_order_they_did_not(tmp_path):
    settings, app = _notifications(tmp_path)
    sent = capture(app.broker, NotificationSent)
    in_store = an_order_v2(channel="store")
    by_phone = an_order_v2(channel="phone")
    on_v1 = an_order()  # before v2: the web shop
    unheard = an_order_v2(channel="store")  # its order never reaches notifications, only its outcome
    async with TestKafkaBroker(app.broker):
        await app.start()
        for order in (in_store, by_phone, on_v1):
            await _send(app.broker, order)
        for order in (in_store, by_phone, on_v1, unheard):
            await _send(app.broker, an_authorization(order), service="payments")
        await app.stop()
    assert [s.key for s in sent] == [in_store.order_id, by_phone.order_id, on_v1.order_id, unheard.order_id], \
        "one notification per outcome; an order alone sends none"
    bodies = {line["order_id"]: line["body"] for line in FileOutbox(settings.outbox_path).read()}
    assert bodies[in_store.order_id].endswith("You placed this order in one of our stores.")
    assert bodies[by_phone.order_id].endswith("You placed this order by phone.")
    assert bodies[on_v1.order_id].endswith("You placed this order in our web shop.")
    assert "You placed this order" not in bodies[unheard.order_id]
    assert bodies[unheard.order_id] == f"We received 25.00 EUR for order {unheard.order_id}."


async def test_notifications_keep_the_first_channel_heard_for_an_order(tmp_path):
    settings, app = _notifications(tmp_path)
    order = an_order_v2(channel="phone")
    async with TestKafkaBroker(app.broker):
        await app.start()
        await _send(app.broker, order)
        await _send(app.broker, order.model_copy(update={"channel": "store"}))  # republished, with another channel
        await _send(app.broker, an_authorization(order), service="payments")
        await app.stop()
    [line] = FileOutbox(settings.outbox_path).read()
    assert line["body"].endswith("You placed this order by phone.")
