"""Orders flow through payments and notifications on the real broker: right outcome, right topic, right key, in order."""

from contracts import NotificationSent, OrderPlaced, PaymentAuthorized, PaymentDeclined
from fleet.runtime.settings import KafkaSettings
from services.notifications import NotificationsSettings
from services.notifications import create_app as create_notifications
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import (
    RunningApps,
    TopicReader,
    a_record,
    an_order,
    an_order_costing,
    as_raw,
    produce_raw,
    start_group_at_end,
    unique_order_id,
)

OUTCOMES = (PaymentAuthorized, PaymentDeclined)


def _payments(bootstrap, group_id, **settings):
    return create_payments(PaymentsSettings(group_id=group_id, kafka=KafkaSettings(bootstrap_servers=bootstrap), **settings))


def _notifications(bootstrap, group_id, outbox_path):
    return create_notifications(NotificationsSettings(group_id=group_id, outbox_path=outbox_path, kafka=KafkaSettings(bootstrap_servers=bootstrap)))


async def test_each_order_reaches_the_expected_outcome_and_a_notification(kafka, group_id, tmp_path):
    await start_group_at_end(kafka, f"{group_id}-pay", [OrderPlaced])
    await start_group_at_end(kafka, f"{group_id}-ntf", [*OUTCOMES, OrderPlaced])  # notifications read the orders too (their channel)
    small = [an_order_costing(5_000) for _ in range(12)]
    large = [an_order_costing(250_000) for _ in range(5)]
    foreign = [an_order(currency="JPY") for _ in range(3)]
    expected = {o.order_id: "authorized" for o in small} | {o.order_id: "over_limit" for o in large} | {o.order_id: "unsupported_currency" for o in foreign}
    records = [a_record(o) for o in small + large + foreign]
    apps = _payments(kafka, f"{group_id}-pay"), _notifications(kafka, f"{group_id}-ntf", tmp_path / "outbox.jsonl")
    async with RunningApps(*apps), TopicReader(kafka, [*OUTCOMES, NotificationSent]) as reader:
        await produce_raw(kafka, [as_raw(r) for r in records])
        seen = await reader.wait_for_keys(expected, per_key=2)
    outcomes = {s.key: getattr(s.event, "reason", "authorized") for s in seen if isinstance(s.event, OUTCOMES)}
    assert outcomes == expected
    notified = {s.key: s.event.template for s in seen if isinstance(s.event, NotificationSent)}
    assert notified == {k: "payment_authorized" if v == "authorized" else "payment_declined" for k, v in expected.items()}
    assert all(s.topic == ("payments.authorized.v1" if isinstance(s.event, PaymentAuthorized) else s.topic) for s in seen)
    assert len(seen) == 2 * len(expected), "each order yields exactly one outcome and one notification"


async def test_every_event_caused_by_an_order_carries_its_correlation_id_and_its_cause(kafka, group_id, tmp_path):
    await start_group_at_end(kafka, f"{group_id}-pay", [OrderPlaced])
    await start_group_at_end(kafka, f"{group_id}-ntf", [*OUTCOMES, OrderPlaced])  # notifications read the orders too (their channel)
    order = a_record(an_order(), correlation_id=f"flow-{group_id}")
    apps = _payments(kafka, f"{group_id}-pay"), _notifications(kafka, f"{group_id}-ntf", tmp_path / "outbox.jsonl")
    async with RunningApps(*apps), TopicReader(kafka, [PaymentAuthorized, NotificationSent]) as reader:
        await produce_raw(kafka, [as_raw(order)])
        [payment, notification] = sorted(await reader.wait_for_keys([order.key], per_key=2), key=lambda s: s.topic != "payments.authorized.v1")
    assert payment.headers["ce_correlationid"] == notification.headers["ce_correlationid"] == f"flow-{group_id}"
    assert payment.headers["ce_causationid"] == order.envelope.id
    assert notification.headers["ce_causationid"] == payment.headers["ce_id"]
    assert (payment.headers["ce_source"], notification.headers["ce_source"]) == ("/eventfleet/payments", "/eventfleet/notifications")


async def test_a_worker_handles_the_events_of_each_key_in_the_order_they_were_published(kafka, group_id):
    """Several events per key, interleaved across keys: the fleet's subscriber hands each key's events over in order."""
    from fleet.runtime.broker import create_broker, subscriber_for

    await start_group_at_end(kafka, group_id, [OrderPlaced])
    keys = [unique_order_id() for _ in range(6)]
    versions = 8
    orders = [an_order_costing(100 * (v + 1), order_id=k) for v in range(versions) for k in keys]
    seen: dict[str, list[int]] = {k: [] for k in keys}
    broker = create_broker("payments", KafkaSettings(bootstrap_servers=kafka))

    async def on_order_placed(order: OrderPlaced) -> None:
        seen[order.order_id].append(order.total_cents)

    subscriber_for(broker, OrderPlaced, group_id=group_id)(on_order_placed)
    worker = type("Worker", (), {"broker": broker})()
    async with RunningApps(worker), TopicReader(kafka, [OrderPlaced]) as reader:
        await produce_raw(kafka, [as_raw(a_record(o)) for o in orders])
        await reader.wait_for(lambda _: all(len(v) == versions for v in seen.values()))
    assert seen == {k: [100 * (v + 1) for v in range(versions)] for k in keys}


async def test_two_replicas_in_one_group_share_the_partitions_and_decide_each_order_once(kafka, group_id, postgres_url):
    """Several replicas share one PostgreSQL store (SQLite is one replica per file)."""
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    first, second = _payments(kafka, group_id, store_url=postgres_url), _payments(kafka, group_id, store_url=postgres_url)
    orders = [an_order_costing(1_000) for _ in range(60)]
    def orders_partitions(running, app):
        return {p for p in running.assignments(app) if p[0] == "orders.placed.v1"}

    async with RunningApps(first, second) as running, TopicReader(kafka, [PaymentAuthorized]) as reader:
        await reader.wait_for(lambda _: orders_partitions(running, first) and orders_partitions(running, second), timeout_s=60)
        owned_by_first, owned_by_second = orders_partitions(running, first), orders_partitions(running, second)
        await produce_raw(kafka, [as_raw(a_record(o)) for o in orders])
        seen = await reader.wait_for_keys([o.order_id for o in orders])
    assert owned_by_first and owned_by_second and not owned_by_first & owned_by_second
    assert len(owned_by_first | owned_by_second) == 6
    assert sorted(s.key for s in seen) == sorted(o.order_id for o in orders)
