"""Every record the fleet writes on the real broker is a CloudEvent that the official CloudEvents SDK reads (Kafka binary mode)."""

import json
import uuid
from datetime import datetime, timedelta, timezone

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from contracts import Keyring, NotificationSent, OrderPlaced, PaymentAuthorized, PaymentDeclined
from fleet.runtime.keys import keyring_path
from fleet.runtime.settings import KafkaSettings
from services.notifications import NotificationsSettings
from services.notifications import create_app as create_notifications
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import RunningApps, TopicReader, a_record, an_order, an_order_costing, as_raw, produce_raw, start_group_at_end

OUTCOMES = (PaymentAuthorized, PaymentDeclined)
WRITER = {
    "orders.placed.v1": "storefront", "payments.authorized.v1": "payments", "payments.declined.v1": "payments",
    "notifications.sent.v1": "notifications",
}


async def test_every_record_of_an_order_flow_is_a_cloudevent_the_official_sdk_reads(kafka, group_id, keys_dir, tmp_path):
    await start_group_at_end(kafka, f"{group_id}-pay", [OrderPlaced])
    await start_group_at_end(kafka, f"{group_id}-ntf", [*OUTCOMES, OrderPlaced])  # notifications read the orders too (their channel)
    orders = [an_order_costing(5_000), an_order_costing(250_000), an_order(currency="JPY")]
    records = [a_record(order, correlation_id=f"flow-{order.order_id}") for order in orders]
    apps = (
        create_payments(PaymentsSettings(group_id=f"{group_id}-pay", kafka=KafkaSettings(bootstrap_servers=kafka))),
        create_notifications(NotificationsSettings(group_id=f"{group_id}-ntf", outbox_path=tmp_path / "outbox.jsonl",
                                                   kafka=KafkaSettings(bootstrap_servers=kafka))),
    )
    async with RunningApps(*apps), TopicReader(kafka, [OrderPlaced, *OUTCOMES, NotificationSent]) as reader:
        await produce_raw(kafka, [as_raw(record) for record in records])
        seen = await reader.wait_for_keys([order.order_id for order in orders], per_key=3)
    assert sorted((s.key, s.topic.split(".")[0]) for s in seen) == sorted(
        (order.order_id, domain) for order in orders for domain in ("orders", "payments", "notifications")
    ), "each order, its one outcome and its one notification"

    keyring = Keyring.load(keyring_path(keys_dir))
    events = {}
    for s in seen:
        event = from_binary(KafkaMessage(headers={k: v.encode("utf-8") for k, v in s.headers.items()}, key=s.key.encode("utf-8"),
                                         value=s.value), JSONFormat())
        assert event.get_specversion() == "1.0"
        assert uuid.UUID(event.get_id()).version == 7 and event.get_id() == s.headers["ce_id"]
        assert event.get_source() == f"/eventfleet/{WRITER[s.topic]}"
        assert event.get_type() == f"dev.eventfleet.{s.topic}"
        assert event.get_subject() == s.key == event.get_extension("partitionkey")
        assert event.get_time().utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - event.get_time()) < timedelta(minutes=5)
        assert event.get_datacontenttype() == "application/json"
        assert event.get_dataschema() == f"urn:eventfleet:schema:{s.topic}"
        assert event.get_extension("correlationid") == f"flow-{s.key}"
        assert keyring.get(event.get_extension("keyid")).owner == WRITER[s.topic]
        assert event.get_extension("signature") == s.headers["ce_signature"]
        assert event.get_data() == json.loads(s.value) == s.event.model_dump(mode="json")
        events[event.get_id()] = (s.topic.split(".")[0], event)

    causes = set()
    for domain, event in events.values():
        cause_domain, cause = events.get(event.get_extension("causationid"), (None, None))
        causes.add((domain, cause_domain, cause and cause.get_subject() == event.get_subject()))
    assert causes == {("orders", None, None), ("payments", "orders", True), ("notifications", "payments", True)}, "each event names its cause"
