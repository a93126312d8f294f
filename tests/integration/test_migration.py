"""The move from orders.placed.v1 to v2 on the real broker (issue 19): while v1 is not retired, the storefront's old and
new publishers write both at the same time. Every consumer handles both with its one handler, declared on
OrderPlacedV2 (a v1 record is verified and validated as v1, then upcast: channel `web`); the order per key holds; every
order reaches one outcome; and what is logged and tracked keeps each record's own topic and type."""

import asyncio
import typing
import uuid
from collections import Counter
from datetime import datetime, timezone

import structlog
from aiokafka.partitioner import murmur2

from contracts import (
    REGISTRY,
    Envelope,
    InventoryBackordered,
    InventoryReserved,
    NotificationSent,
    OrderPlaced,
    OrderPlacedV2,
    PaymentAuthorized,
    PaymentDeclined,
    ShipmentScheduled,
    StockReceived,
)
from fleet.runtime.broker import create_broker, subscriber_for
from fleet.runtime.observe.logs import merge_event_context
from fleet.runtime.settings import KafkaSettings
from fleet.runtime.store import open_store
from services.inventory import InventorySettings
from services.inventory import create_app as create_inventory
from services.notifications import NotificationsSettings
from services.notifications import create_app as create_notifications
from services.notifications.outbox import FileOutbox
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from services.shipping import ShippingSettings
from services.shipping import create_app as create_shipping
from services.tracker import TrackerSettings, order_status
from services.tracker import create_app as create_tracker
from services.tracker.app import OrderEvent
from services.tracker.queries import MIGRATIONS as TRACKER_MIGRATIONS
from tests.support import (
    BrokerOnly,
    NotYet,
    RunningApps,
    TopicReader,
    a_record,
    an_order,
    an_order_v2,
    as_raw,
    end_offsets,
    eventually,
    produce_raw,
    start_group_at_end,
    unique_order_id,
    wait_until_committed_past,
)

V1, V2 = REGISTRY.of(OrderPlaced), REGISTRY.of(OrderPlacedV2)
PARTITIONS = V1.partitions
assert V2.partitions == PARTITIONS, "both versions are keyed alike: a key lands on the same partition number of each"

OUTCOMES = (PaymentAuthorized, PaymentDeclined, InventoryReserved, InventoryBackordered, ShipmentScheduled, NotificationSent)
NOTIFIED = (OrderPlacedV2, PaymentAuthorized, PaymentDeclined, InventoryBackordered, ShipmentScheduled)
PLACED_THROUGH = {"web": "in our web shop", "store": "in one of our stores", "phone": "by phone"}
TERMINAL = {"payment_declined", "backordered", "shipment_scheduled"}


def partition_of(key: str) -> int:
    """The partition the default partitioner (Java's and aiokafka's: murmur2 of the key) puts a key on."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def order_id_on(partition: int, prefix: str) -> str:
    while partition_of(order_id := unique_order_id(prefix)) != partition:
        pass
    return order_id


def _settings(kafka: str, tmp_path, group_id: str, service: str) -> dict:
    return {"group_id": group_id, "store_url": f"sqlite:///{tmp_path / service}.db", "kafka": KafkaSettings(bootstrap_servers=kafka)}


async def _tracked(store_url: str, expected: dict[str, tuple[str, int]], timeout_s: float = 90.0) -> dict[str, dict]:
    """The tracker's answers once every order has its status and as many history entries as its flow has events."""
    async with await open_store(store_url) as store:
        await store.migrate(TRACKER_MIGRATIONS)  # the tracker may not have created its table yet

        async def all_there():
            answers = {order_id: await order_status(store, order_id) for order_id in expected}
            short = {order_id: (answer and answer["status"], answer and len(answer["history"]), want)
                     for order_id, answer in answers.items() for want in [expected[order_id]]
                     if not answer or (answer["status"], len(answer["history"])) != want}
            return answers if not short else NotYet(dict(list(short.items())[:5]) | {"orders short": len(short)})

        return await eventually(all_there, f"the tracker to fold {len(expected)} orders' flows", timeout_s=timeout_s)


async def test_v1_and_v2_orders_published_at_once_each_reach_one_outcome_through_every_consumer(kafka, group_id, tmp_path):
    groups = {service: f"{group_id}-{service[:3]}" for service in ("payments", "inventory", "shipping", "notifications", "tracker")}
    await start_group_at_end(kafka, groups["payments"], [OrderPlacedV2])
    await start_group_at_end(kafka, groups["inventory"], [StockReceived, OrderPlacedV2, PaymentAuthorized])
    await start_group_at_end(kafka, groups["shipping"], [InventoryReserved])
    await start_group_at_end(kafka, groups["notifications"], NOTIFIED)
    await start_group_at_end(kafka, groups["tracker"], typing.get_args(OrderEvent))

    # SKUs of this test only: what one is stocked with is what this test received, and one is never stocked.
    run = uuid.uuid4().hex[:8].upper()
    tea, mug, espresso, missing = (f"SKU-MIG-{run}-{name}" for name in ("TEA", "MUG", "ESPRESSO", "NEVER"))
    stock = [a_record(StockReceived(receipt_id=f"rcpt-{run}-{sku}", sku=sku, quantity=10_000, received_at=datetime.now(timezone.utc)),
                      service="warehouse") for sku in (tea, mug, espresso)]
    # Each shape: the order's lines and currency, and what it comes to. A v1 order and a v2 order of each shape, in turn.
    shapes = [
        (dict(lines=((tea, 2, 1250),)), "shipment_scheduled"),
        (dict(lines=((tea, 1, 1250), (mug, 3, 900))), "shipment_scheduled"),
        (dict(lines=((espresso, 1, 250_000),)), "payment_declined"),  # over the default limit (1,000.00)
        (dict(lines=((mug, 1, 900),), currency="JPY"), "payment_declined"),  # a currency payments does not take
        (dict(lines=((missing, 2, 500),)), "backordered"),
    ]
    channels = ("store", "phone", "web")
    pairs = 30  # 60 orders
    v1_orders, v2_orders, outcome_of = [], [], {}
    for i in range(pairs):
        shape, outcome = shapes[i % len(shapes)]
        partition = i % PARTITIONS  # the pair's two orders on the same partition number of their two topics
        old = an_order(order_id=order_id_on(partition, f"ord-mig1-{run}"), **shape)
        new = an_order_v2(order_id=order_id_on(partition, f"ord-mig2-{run}"), channel=channels[i % len(channels)], **shape)
        v1_orders.append(old)
        v2_orders.append(new)
        outcome_of |= {old.order_id: outcome, new.order_id: outcome}
    orders = [order for pair in zip(v1_orders, v2_orders) for order in pair]  # v1, v2, v1, v2, ... in pairs
    records = {order.order_id: a_record(order, correlation_id=f"mig-{order.order_id}") for order in orders}

    channel_of = {o.order_id: "web" for o in v1_orders} | {o.order_id: o.channel for o in v2_orders}
    templates = {
        "shipment_scheduled": ["payment_authorized", "shipment_scheduled"],
        "payment_declined": ["payment_declined"],
        "backordered": ["order_backordered", "payment_authorized"],
    }
    # The tracker's history: the order, its outcomes, and one notification per template.
    flow_length = {"shipment_scheduled": 4 + 2, "payment_declined": 2 + 1, "backordered": 3 + 2}

    outbox = tmp_path / "notifications.jsonl"
    payments = create_payments(PaymentsSettings(**_settings(kafka, tmp_path, groups["payments"], "payments")))
    others = (
        create_inventory(InventorySettings(**_settings(kafka, tmp_path, groups["inventory"], "inventory"))),
        create_shipping(ShippingSettings(**_settings(kafka, tmp_path, groups["shipping"], "shipping"))),
        create_notifications(NotificationsSettings(**_settings(kafka, tmp_path, groups["notifications"], "notifications"), outbox_path=outbox)),
        create_tracker(TrackerSettings(**_settings(kafka, tmp_path, groups["tracker"], "tracker"))),
    )
    with structlog.testing.capture_logs(processors=[merge_event_context]) as lines:
        async with RunningApps(*others), TopicReader(kafka, OUTCOMES) as reader:
            await produce_raw(kafka, [as_raw(r) for r in stock])
            # Inventory holds the stock before any payment can reach it: a paid order would be backordered otherwise.
            await wait_until_committed_past(kafka, groups["inventory"], await end_offsets(kafka, [REGISTRY.of(StockReceived).name]))

            # Both versions at the same time: one producer each, their records interleaved on the same partitions.
            async def publish(version: list) -> None:
                await produce_raw(kafka, [as_raw(records[o.order_id]) for o in version])

            await asyncio.gather(publish(v1_orders), publish(v2_orders))
            # The channel travels with the order, which notifications read on its own topic, and a payment outcome on
            # another: one that comes first names no channel (services/notifications/app.py). So that every text names
            # one here, notifications have heard every order before payments starts deciding them.
            await wait_until_committed_past(kafka, groups["notifications"], await end_offsets(kafka, [V1.name, V2.name]))
            async with RunningApps(payments):
                def every_outcome(seen) -> bool:
                    notified = Counter(s.key for s in seen if isinstance(s.event, NotificationSent))
                    return all(notified[k] >= len(templates[outcome_of[k]]) for k in outcome_of)

                await reader.wait_for(every_outcome, timeout_s=120)
                answers = await _tracked(f"sqlite:///{tmp_path / 'tracker'}.db",
                                         {k: (outcome, flow_length[outcome]) for k, outcome in outcome_of.items()})
                # Nothing more is coming: every group has handled what is on its topics, and the reader has read it all.
                for service, models in (("payments", [V1.name, V2.name]), ("inventory", [V1.name, V2.name, "payments.authorized.v1"]),
                                        ("shipping", ["inventory.reserved.v1"])):
                    await wait_until_committed_past(kafka, groups[service], await end_offsets(kafka, models))
                seen = [s for s in await reader.read_to_end() if s.key in outcome_of]

    # Every order reached exactly one terminal outcome: one payment decision, one inventory outcome if paid, one
    # shipment if reserved, and one notification per template.
    by_key: dict[str, list] = {k: [] for k in outcome_of}
    for s in seen:
        by_key[s.key].append(s.event)
    for order_id, outcome in outcome_of.items():
        kinds = Counter(type(e).__name__ for e in by_key[order_id] if not isinstance(e, NotificationSent))
        expected_kinds = {
            "shipment_scheduled": {"PaymentAuthorized": 1, "InventoryReserved": 1, "ShipmentScheduled": 1},
            "payment_declined": {"PaymentDeclined": 1},
            "backordered": {"PaymentAuthorized": 1, "InventoryBackordered": 1},
        }[outcome]
        assert kinds == expected_kinds, f"{order_id} ({outcome}): {kinds}"
        sent = sorted(e.template for e in by_key[order_id] if isinstance(e, NotificationSent))
        assert sent == templates[outcome], f"{order_id}: {sent}"

    # A v1 order was decided as the same order of v2: the handlers saw the same OrderPlacedV2 (but its channel).
    def decision(order_id: str):
        [event] = [e for e in by_key[order_id] if isinstance(e, (PaymentAuthorized, PaymentDeclined))]
        return type(event), event.model_dump(exclude={"order_id", "payment_id", "authorized_at", "declined_at"})

    for old, new in zip(v1_orders, v2_orders):
        assert decision(old.order_id) == decision(new.order_id)
    assert Counter(decision(o.order_id)[0].__name__ for o in orders) == {"PaymentAuthorized": 36, "PaymentDeclined": 24}
    declined = {e.reason for events in by_key.values() for e in events if isinstance(e, PaymentDeclined)}
    assert declined == {"over_limit", "unsupported_currency"}

    # The tracker: a terminal status for each, as for its twin of the other version, and the order's own type kept.
    for order_id, outcome in outcome_of.items():
        answer = answers[order_id]
        assert answer["status"] == outcome and answer["status"] in TERMINAL
        [entry] = [e for e in answer["history"] if e["event_id"] == records[order_id].envelope.id]
        assert entry["event_type"] == records[order_id].envelope.type
        assert answer["correlation_id"] == f"mig-{order_id}"
    assert {e["event_type"] for o in v1_orders for e in answers[o.order_id]["history"]} & {V1.type_name, V2.type_name} == {V1.type_name}
    assert {e["event_type"] for o in v2_orders for e in answers[o.order_id]["history"]} & {V1.type_name, V2.type_name} == {V2.type_name}

    # Each consumer's log line keeps the record's own topic and type: payments, inventory, notifications, the tracker.
    handled = Counter()
    for line in lines:
        if line.get("event") == "event_handled" and line.get("correlation_id", "").startswith("mig-ord-mig"):
            order_id = line["correlation_id"].removeprefix("mig-")
            if line.get("event_id") == records[order_id].envelope.id:
                topic = V1 if order_id in {o.order_id for o in v1_orders} else V2
                assert (line["topic"], line["event_type"]) == (topic.name, topic.type_name), line
                handled[order_id] += 1
    assert set(handled) == set(outcome_of) and min(handled.values()) >= 4, handled

    # Notifications name where each order was placed: the store or the phone for v2, the web shop for v1 (its default).
    feed = [line for line in FileOutbox(outbox).read() if line["order_id"] in outcome_of]
    assert Counter((line["order_id"], line["template"]) for line in feed) == Counter(
        (k, template) for k, outcome in outcome_of.items() for template in templates[outcome])
    for line in feed:
        assert line["body"].endswith(f"You placed this order {PLACED_THROUGH[channel_of[line['order_id']]]}."), line
    assert {channel_of[o.order_id] for o in v1_orders} == {"web"} and {channel_of[o.order_id] for o in v2_orders} == set(channels)


async def test_a_handler_on_v2_gets_each_keys_records_of_each_topic_in_publish_order_and_each_once(kafka, group_id):
    """Several orders per key, each key's alternately on v1 and v2, interleaved across keys.

    Kafka keeps the order of one partition of one topic, not across topics: orders.placed.v1 and v2 are two topics, and
    a consumer fetches their partitions independently (each fetch answers whatever partitions have records, as they
    come), so a key's v2 record may be handed over before an older v1 record of the same key. What holds: per key, the
    records of each topic arrive in the order they were published, and every record arrives once. (An order is
    published once, on one version, so the fleet's handlers never depend on the order across the two.)"""
    await start_group_at_end(kafka, group_id, [OrderPlacedV2])
    keys = [unique_order_id("ord-mig-key") for _ in range(6)]
    versions = 8  # per key: v1, v2, v1, v2, ...
    published = []
    for version in range(versions):
        for key in keys:
            total = 100 * (version + 1)
            old = version % 2 == 0
            order = an_order(order_id=key, lines=(("SKU-TEA-001", 1, total),)) if old else \
                an_order_v2(order_id=key, channel="store", lines=(("SKU-TEA-001", 1, total),))
            published.append(a_record(order))
    handed: dict[str, list[tuple[str, int, str, type]]] = {k: [] for k in keys}
    broker = create_broker("payments", KafkaSettings(bootstrap_servers=kafka))

    async def on_order_placed(order: OrderPlacedV2, envelope: Envelope) -> None:
        handed[order.order_id].append((envelope.type, order.total_cents, order.channel, type(order)))

    subscriber_for(broker, OrderPlacedV2, group_id=group_id)(on_order_placed)
    async with RunningApps(BrokerOnly(broker)), TopicReader(kafka, [OrderPlaced, OrderPlacedV2]) as reader:
        await produce_raw(kafka, [as_raw(r) for r in published])
        await reader.wait_for(lambda _: sum(map(len, handed.values())) >= len(published))
        # Every record handed over and committed: nothing is left to come twice.
        await wait_until_committed_past(kafka, group_id, await end_offsets(kafka, [V1.name, V2.name]))
    for key in keys:
        assert [total for t, total, _, _ in handed[key] if t == V1.type_name] == [100 * (v + 1) for v in range(0, versions, 2)]
        assert [total for t, total, _, _ in handed[key] if t == V2.type_name] == [100 * (v + 1) for v in range(1, versions, 2)]
        assert sorted(total for _, total, _, _ in handed[key]) == [100 * (v + 1) for v in range(versions)], "each once"
        assert {(t, channel, model) for t, _, channel, model in handed[key]} == {
            (V1.type_name, "web", OrderPlacedV2), (V2.type_name, "store", OrderPlacedV2)
        }
    assert sum(map(len, handed.values())) == len(published)
    assert {s.topic for s in reader.seen if s.key in handed} == {V1.name, V2.name}
    assert all(
        {(s.topic, s.partition) for s in reader.seen if s.key == k} == {(V1.name, partition_of(k)), (V2.name, partition_of(k))}
        for k in keys
    ), "each key on the same partition number of both topics"
