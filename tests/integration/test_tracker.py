"""The tracker on the real broker: it folds the order flow into each order's status, once per event, on SQLite and
PostgreSQL, and the gateway serves what it folded."""

import asyncio
import typing

import httpx
import pytest

from contracts import REGISTRY, OrderPlaced, PaymentAuthorized
from fleet.runtime.settings import KafkaSettings
from fleet.runtime.store import open_store
from fleet import catalog
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from services.tracker import TrackerSettings, order_status
from services.tracker import create_app as create_tracker
from services.tracker.app import OrderEvent, track
from services.tracker.queries import MIGRATIONS
from tests.integration.test_gateway import gateway_settings
from tests.support import (
    NotYet,
    RunningApps,
    TopicReader,
    a_record,
    an_authorization,
    an_order,
    as_raw,
    eventually,
    produce_raw,
    start_group_at_end,
)

pytestmark = pytest.mark.integration

TRACKED = typing.get_args(OrderEvent)


def _tracker(bootstrap: str, group_id: str, store_url: str):
    return create_tracker(TrackerSettings(group_id=group_id, store_url=store_url, kafka=KafkaSettings(bootstrap_servers=bootstrap)))


def _payments(bootstrap: str, group_id: str, store_url: str):
    return create_payments(PaymentsSettings(group_id=group_id, store_url=store_url, kafka=KafkaSettings(bootstrap_servers=bootstrap)))


async def tracked(store_url: str, order_id: str, status: str, timeout_s: float = 60.0, events: int = 1) -> dict:
    """Reads the tracker's store, as the gateway does, until the order has `status` and `events` history entries (the
    tracker folds a flow's events in whatever order its topics deliver them); fails with what it last saw."""
    async with await open_store(store_url) as store:
        await store.migrate(MIGRATIONS)  # the tracker may not have created its table yet

        async def answer_once_there() -> dict | None:
            answer = await order_status(store, order_id)
            return answer if answer and answer["status"] == status and len(answer["history"]) >= events else NotYet(answer)

        return await eventually(answer_once_there, f"order {order_id} to reach {status} with {events} events", timeout_s=timeout_s)


def history_of(answer: dict) -> list[tuple[str, str]]:
    return [(entry["event_type"], entry["event_id"]) for entry in answer["history"]]


async def ask_gateway(settings, token: str, *order_ids: str) -> list[httpx.Response]:
    """GETs each order from the gateway app in this event loop, with its lifespan run as a server would run it."""
    app = catalog.create_app("gateway", settings)  # wired to the tracker's read model, as `fleet run gateway` is
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        return [await http.get(f"/v1/orders/{order_id}", headers={"Authorization": f"Bearer {token}"}) for order_id in order_ids]


async def test_an_order_paid_by_payments_is_tracked_with_its_flow_and_served_by_the_gateway(kafka, group_id, tmp_path):
    await start_group_at_end(kafka, f"{group_id}-pay", [OrderPlaced])
    await start_group_at_end(kafka, f"{group_id}-trk", TRACKED)
    store_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    placed = an_order()
    order = a_record(placed, correlation_id=f"flow-{group_id}")
    apps = _payments(kafka, f"{group_id}-pay", f"sqlite:///{tmp_path / 'p.db'}"), _tracker(kafka, f"{group_id}-trk", store_url)
    async with RunningApps(*apps), TopicReader(kafka, [PaymentAuthorized]) as reader:
        await produce_raw(kafka, [as_raw(order)])
        [payment] = await reader.wait_for_keys([order.key])
        answer = await tracked(store_url, order.key, "payment_authorized", events=2)
        settings, token = gateway_settings(tmp_path, kafka, tracker_store_url=store_url)
        served, unknown = await ask_gateway(settings, token, order.key, "ord-never-placed")
    assert history_of(answer) == [(REGISTRY.of(OrderPlaced).type_name, order.envelope.id),
                                  (REGISTRY.of(PaymentAuthorized).type_name, payment.headers["ce_id"])]
    assert answer["correlation_id"] == f"flow-{group_id}" and answer["customer_id"] == placed.customer_id
    assert [entry["source"] for entry in answer["history"]] == ["/eventfleet/storefront", "/eventfleet/payments"]
    assert (served.status_code, served.json()) == (200, answer)
    assert (unknown.status_code, unknown.json()["reason"]) == (404, "unknown_order")


async def test_an_event_delivered_twice_leaves_one_history_entry(kafka, group_id, tmp_path):
    await start_group_at_end(kafka, group_id, TRACKED)
    store_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    twice, after = a_record(an_order()), a_record(an_order())
    # One partition for all three: once the later order is tracked, both copies before it have been handled.
    records = [(*as_raw(twice), 0), (*as_raw(twice), 0), (*as_raw(after), 0)]
    async with RunningApps(_tracker(kafka, group_id, store_url)):
        await produce_raw(kafka, records)
        await tracked(store_url, after.key, "placed")
        answer = await tracked(store_url, twice.key, "placed")
    assert history_of(answer) == [(REGISTRY.of(OrderPlaced).type_name, twice.envelope.id)]


async def test_the_tracker_keeps_its_read_model_on_postgresql(kafka, group_id, postgres_url):
    await start_group_at_end(kafka, group_id, TRACKED)
    placed = an_order()
    order = a_record(placed, correlation_id=f"flow-{group_id}")
    payment = a_record(an_authorization(placed), service="payments", correlation_id=f"flow-{group_id}")
    async with RunningApps(_tracker(kafka, group_id, postgres_url)):
        await produce_raw(kafka, [as_raw(order), as_raw(payment)])
        answer = await tracked(postgres_url, placed.order_id, "payment_authorized", events=2)
    assert history_of(answer) == [(REGISTRY.of(OrderPlaced).type_name, order.envelope.id),
                                                       (REGISTRY.of(PaymentAuthorized).type_name, payment.envelope.id)]
    assert answer["correlation_id"] == f"flow-{group_id}" and answer["customer_id"] == placed.customer_id


async def test_events_of_one_order_folded_at_once_on_postgresql_all_land_in_its_history(postgres_url):
    """The main subscriber and a retry tier, or two replicas, can fold two events of one order side by side."""
    orders = [an_order() for _ in range(20)]
    events = [event for order in orders for event in (order, an_authorization(order))]
    async with await open_store(postgres_url) as store:
        await store.migrate(MIGRATIONS)

        async def fold(event) -> None:
            async with store.transaction() as tx:
                await track(tx, "tracker", event, a_record(event, service=REGISTRY.of(event).owner).envelope)

        await asyncio.gather(*(fold(event) for event in events))
        answers = [await order_status(store, o.order_id) for o in orders]
    assert all(len(answer["history"]) == 2 and answer["status"] == "payment_authorized" for answer in answers), answers
