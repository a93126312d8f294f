"""The tracker's read model on SQLite in a temporary folder: a status saved is loaded back whole, and saved again in place."""

import json

import pytest

from fleet.runtime.store import Store, open_store
from services.tracker import queries
from services.tracker.core import HistoryEntry, OrderStatus

PLACED = HistoryEntry("dev.eventfleet.orders.placed.v1", "e1", "2026-11-24T16:00:00Z", "/eventfleet/storefront")
PAID = HistoryEntry("dev.eventfleet.payments.authorized.v1", "e2", "2026-11-24T16:00:01Z", "/eventfleet/payments")


def a_status(status: str = "placed", history=(PLACED,)) -> OrderStatus:
    return OrderStatus(order_id="ord-1", status=status, correlation_id="flow-1", customer_id="cus-1042", history=history)


@pytest.fixture
async def store(tmp_path) -> Store:
    async with await open_store(f"sqlite:///{tmp_path / 'tracker.db'}") as opened:
        await opened.migrate(queries.MIGRATIONS)
        yield opened


async def save(store: Store, status: OrderStatus) -> None:
    async with store.transaction() as tx:
        await queries.save(tx, status)


async def load(store: Store, order_id: str) -> OrderStatus | None:
    async with store.transaction() as tx:
        return await queries.load(tx, order_id)


async def test_a_saved_status_loads_back_equal(store):
    await save(store, a_status())
    assert await load(store, "ord-1") == a_status()


async def test_an_order_never_saved_loads_as_none_and_answers_none(store):
    assert await load(store, "ord-unknown") is None
    assert await queries.order_status(store, "ord-unknown") is None


async def test_saving_an_order_again_replaces_its_row(store):
    await save(store, a_status())
    await save(store, a_status("payment_authorized", (PLACED, PAID)))
    assert await load(store, "ord-1") == a_status("payment_authorized", (PLACED, PAID))
    async with store.transaction() as tx:
        assert await tx.fetchone("SELECT COUNT(*) FROM order_status") == (1,)


async def test_the_history_is_kept_as_json_text_in_time_order(store):
    await save(store, a_status("payment_authorized", (PLACED, PAID)))
    async with store.transaction() as tx:
        [(history, updated_at)] = await tx.fetchall("SELECT history, updated_at FROM order_status")
    assert [entry["event_id"] for entry in json.loads(history)] == ["e1", "e2"]
    assert json.loads(history)[0] == {"event_type": PLACED.event_type, "event_id": "e1", "time": PLACED.time, "source": PLACED.source}
    assert updated_at.endswith("+00:00")


async def test_a_row_written_by_an_older_tracker_with_spaced_json_still_loads(store):
    """Rows written before the tracker wrote its history with orjson (json.dumps' spacing) read back the same."""
    from dataclasses import asdict

    spaced = json.dumps([asdict(PLACED), asdict(PAID)])
    assert ", " in spaced
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO order_status (order_id, status, correlation_id, customer_id, history, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            ("ord-1", "payment_authorized", "flow-1", "cus-1042", spaced, "2026-11-24T16:00:01+00:00"),
        )
    assert await load(store, "ord-1") == a_status("payment_authorized", (PLACED, PAID))


async def test_the_api_answer_has_the_status_the_flow_the_customer_and_each_event(store):
    await save(store, a_status("payment_authorized", (PLACED, PAID)))
    assert await queries.order_status(store, "ord-1") == {
        "order_id": "ord-1",
        "status": "payment_authorized",
        "correlation_id": "flow-1",
        "customer_id": "cus-1042",
        "history": [
            {"event_type": PLACED.event_type, "event_id": "e1", "time": PLACED.time, "source": PLACED.source},
            {"event_type": PAID.event_type, "event_id": "e2", "time": PAID.time, "source": PAID.source},
        ],
    }


async def test_migrating_twice_keeps_the_statuses(store):
    await save(store, a_status())
    await store.migrate(queries.MIGRATIONS)
    assert await load(store, "ord-1") == a_status()
