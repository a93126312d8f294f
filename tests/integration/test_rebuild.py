"""`fleet rebuild tracker` on the real broker: a tracker that folded a run of several hundred orders is rebuilt from the
start of its topics while the gateway keeps serving from its store; every request during the rebuild and the swap
succeeds, every order's status is what it was, the store equals a fresh rebuild, and the tracker folds on. A service
whose store keeps effects refuses to be rebuilt, in one line."""

import asyncio
import os
import random
import time
import typing
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest

from contracts import REGISTRY, ShipmentScheduled
from fleet import catalog
from fleet.catalog import Rebuildable
from fleet.ops.rebuild import Folder, TopicsFromTheStart, rebuild_read_model
from fleet.ops import rebuild_stores
from fleet.ops.control import standing_orders
from fleet.ops.rebuild_stores import fresh_store_beside
from fleet.runtime.keys import OPERATOR_SIGNER, KeyStore
from fleet.runtime.settings import KafkaSettings
from fleet.runtime.store import Store, open_store
from services.tracker import READ_MODEL, TrackerSettings, order_status
from services.tracker import create_app as create_tracker
from services.tracker.app import OrderEvent
from tests.integration.test_gateway import gateway_settings
from tests.support import (
    NOW,
    NotYet,
    RunningApps,
    a_decline,
    a_record,
    an_authorization,
    an_order,
    as_raw,
    assert_fails_in_one_line,
    eventually,
    produce_raw,
    run_fleet,
    start_group_at_end,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TRACKED = typing.get_args(OrderEvent)
ORDERS = 300


def a_shipment(order) -> ShipmentScheduled:
    return ShipmentScheduled(
        order_id=order.order_id, customer_id=order.customer_id, shipment_id=f"shp-{order.order_id}", carrier="parcel",
        units=2, ship_by=date(2026, 11, 25), scheduled_at=NOW,
    )


def flow_of(index: int, prefix: str) -> list:
    """One order's signed records as its flow publishes them (one correlation id): placed; then declined, or
    authorized, or authorized and shipped, or nothing yet."""
    order = an_order(order_id=f"{prefix}-{index:04d}")
    later = [[(a_decline(order), "payments")], [(an_authorization(order), "payments")],
             [(an_authorization(order), "payments"), (a_shipment(order), "shipping")], []][index % 4]
    flow = f"flow-{order.order_id}"
    return [a_record(order, correlation_id=flow)] + [a_record(e, service=s, correlation_id=flow) for e, s in later]


def _tracker(bootstrap: str, group_id: str, store_url: str):
    return create_tracker(TrackerSettings(group_id=group_id, store_url=store_url, kafka=KafkaSettings(bootstrap_servers=bootstrap)))


async def answers(store: Store, order_ids) -> dict:
    return {order_id: await order_status(store, order_id) for order_id in order_ids}


async def answers_in(store_url: str, order_ids) -> dict:
    async with await open_store(store_url) as store:
        return await answers(store, order_ids)


async def all_folded(store_url: str, expected: dict[str, int]) -> dict:
    """Waits until each order's history has its expected number of events; returns every order's answer."""
    async with await open_store(store_url) as store:
        async def folded():
            now = await answers(store, expected)
            behind = {o: a and len(a["history"]) for o, a in now.items() if not a or len(a["history"]) != expected[o]}
            return now if not behind else NotYet(f"{len(behind)} orders behind, e.g. {list(behind.items())[:3]}")

        return await eventually(folded, f"the tracker to fold {len(expected)} orders", timeout_s=120)


async def claims_of(store_url: str, group: str) -> set[str]:
    async with await open_store(store_url) as store, store.transaction() as tx:
        return {row[0] for row in await tx.fetchall("SELECT event_id FROM inbox WHERE group_id = ?", (group,))}


async def fresh_rebuild(kafka: str, store_url: str, group: str, order_ids) -> tuple[dict, set[str]]:
    """What a rebuild from the topics' start gives now, never swapped in: each order's answer and the group's claims."""
    target = Rebuildable("tracker", group, store_url, READ_MODEL)
    keyring = KeyStore.for_signer(Path(os.environ["FLEET_KEYS_DIR"]), OPERATOR_SIGNER).keyring()
    names = [topic.name for topic in REGISTRY.consumed_in_group_by("tracker")]
    async with (fresh_store_beside(store_url, READ_MODEL, now=datetime.now(UTC)) as fresh,
                TopicsFromTheStart(kafka, names) as topics):
        folder = Folder(fresh, target, keyring, REGISTRY)
        await folder.read_to(topics, await topics.ends(), print)
        async with fresh.store.transaction() as tx:
            claims = {row[0] for row in await tx.fetchall("SELECT event_id FROM inbox WHERE group_id = ?", (group,))}
        return await answers(fresh.store, order_ids), claims


class Asker:
    """Asks the gateway for orders, round after round, until told to stop; then finishes one more whole round, so
    that rounds ran before, during and after whatever happened meanwhile."""

    def __init__(self, http: httpx.AsyncClient, token: str, order_ids: list[str]) -> None:
        self.http, self.token, self.order_ids = http, token, order_ids
        self.seen: list[tuple[int, str, int, dict]] = []  # (round, order, status code, body)
        self.stop = asyncio.Event()
        self.one_round_done = asyncio.Event()

    async def run(self) -> None:
        round_ = 0
        while True:
            last = self.stop.is_set()
            for order_id in random.sample(self.order_ids, len(self.order_ids)):
                answer = await self.http.get(f"/v1/orders/{order_id}", headers={"Authorization": f"Bearer {self.token}"})
                self.seen.append((round_, order_id, answer.status_code, answer.json()))
            round_ += 1
            self.one_round_done.set()
            if last:
                return


async def test_a_rebuilt_tracker_equals_the_live_one_and_the_gateway_serves_through_the_swap(kafka, group_id, tmp_path):
    prefix = f"ord-rb-{group_id[-8:]}"
    store_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    # Published before the tracker's group starts at the topics' end: only a rebuild, which reads from their start,
    # folds it. The gateway answers 404 for it until the swap, and 200 after: that is how the test sees the swap.
    early = a_record(an_order(order_id=f"{prefix}-early"), correlation_id=f"flow-{prefix}-early")
    await produce_raw(kafka, [as_raw(early)])
    await start_group_at_end(kafka, group_id, TRACKED)
    flows = [flow_of(i, prefix) for i in range(ORDERS)]
    expected = {flow[0].key: len(flow) for flow in flows}
    env = {**os.environ, "FLEET_KAFKA_BOOTSTRAP_SERVERS": kafka, "TRACKER_STORE_URL": store_url, "TRACKER_GROUP_ID": group_id}

    async with RunningApps(_tracker(kafka, group_id, store_url)):
        await produce_raw(kafka, [as_raw(record) for flow in flows for record in flow])
        before = await all_folded(store_url, expected)
        settings, token = gateway_settings(tmp_path, kafka, tracker_store_url=store_url)
        gateway = catalog.create_app("gateway", settings)  # wired to the tracker's read model, as `fleet run gateway` is
        async with (gateway.router.lifespan_context(gateway),
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw") as http):
            asker = Asker(http, token, [*expected, early.key])
            asking = asyncio.create_task(asker.run())
            await asker.one_round_done.wait()  # every order asked once before the rebuild starts
            rebuilt = await asyncio.to_thread(run_fleet, "rebuild", "tracker", cwd=REPO, env=env, timeout_s=150)
            asker.stop.set()
            await asking
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        after = await answers_in(store_url, [*expected, early.key])

        # The tracker was resumed: it folds what comes next.
        later = [a_record(an_order(order_id=f"{prefix}-later-{i}")) for i in range(5)]
        await produce_raw(kafka, [as_raw(record) for record in later])
        await all_folded(store_url, {record.key: 1 for record in later})

    assert "swapped in one transaction" in rebuilt.stdout and "resumed tracker" in rebuilt.stdout, rebuilt.stdout
    known = [(code, order_id, body) for _r, order_id, code, body in asker.seen if order_id != early.key]
    assert [(o, c) for c, o, _ in known if c != 200] == [], "every request for a known order succeeded"
    assert all(body == before[order_id] for _code, order_id, body in known), "and answered what the tracker had folded"
    early_codes = [code for _r, order_id, code, _ in asker.seen if order_id == early.key]
    swap_at = early_codes.index(200)
    assert early_codes[:swap_at] and set(early_codes[:swap_at]) == {404}, early_codes
    assert set(early_codes[swap_at:]) == {200}, "once swapped, the gateway serves the new model, without a restart"

    assert {o: after[o] for o in expected} == before, "every order of the run is as the live tracker had folded it"
    assert after[early.key]["status"] == "placed" and after[early.key]["history"][0]["event_id"] == early.envelope.id

    ids = [*expected, early.key, *(record.key for record in later)]
    live, live_claims = await answers_in(store_url, ids), await claims_of(store_url, group_id)
    fresh, fresh_claims = await fresh_rebuild(kafka, store_url, group_id, ids)
    assert live == fresh, "the live store holds what a fresh rebuild of the topics gives"
    ours = {record.envelope.id for flow in [*flows, [early], later] for record in flow}
    assert live_claims & ours == fresh_claims & ours == ours


async def test_requests_made_while_the_swap_holds_the_live_store_succeed(kafka, group_id, tmp_path, monkeypatch):
    prefix = f"ord-rbsw-{group_id[-8:]}"
    store_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    early = a_record(an_order(order_id=f"{prefix}-early"), correlation_id=f"flow-{prefix}-early")  # as above
    await produce_raw(kafka, [as_raw(early)])
    await start_group_at_end(kafka, group_id, TRACKED)
    flows = [flow_of(i, prefix) for i in range(20)]
    expected = {flow[0].key: len(flow) for flow in flows}
    monkeypatch.setenv("TRACKER_STORE_URL", store_url)
    monkeypatch.setenv("TRACKER_GROUP_ID", group_id)
    keys = KeyStore.for_signer(Path(os.environ["FLEET_KEYS_DIR"]), OPERATOR_SIGNER)
    async with RunningApps(_tracker(kafka, group_id, store_url)):
        await produce_raw(kafka, [as_raw(record) for flow in flows for record in flow])
        before = await all_folded(store_url, expected)
        settings, token = gateway_settings(tmp_path, kafka, tracker_store_url=store_url)
        gateway = catalog.create_app("gateway", settings)
        async with (gateway.router.lifespan_context(gateway),
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw") as http):
            loop = asyncio.get_running_loop()
            during: list = []

            async def ask(order_id: str) -> tuple[str, int, dict]:
                answer = await http.get(f"/v1/orders/{order_id}", headers={"Authorization": f"Bearer {token}"})
                return order_id, answer.status_code, answer.json()

            def ask_while_swapping() -> None:
                # In the swap's thread, its transaction open and the new model written, not committed: the gateway
                # (on the event loop) is asked for every order, and given time to reach the store before the commit.
                during.extend(asyncio.run_coroutine_threadsafe(ask(o), loop) for o in [early.key, *expected])
                time.sleep(0.5)

            swap = rebuild_stores.swap_sqlite
            monkeypatch.setattr(rebuild_stores, "swap_sqlite",
                                lambda *args, **kwargs: swap(*args, **kwargs, before_commit=ask_while_swapping))
            report = await rebuild_read_model(kafka, "tracker", keys)
            answered = [await asyncio.wrap_future(future) for future in during]
    assert report.swap.swapped and len(answered) == len(expected) + 1
    assert [(o, code, body) for o, code, body in answered if o != early.key] == [(o, 200, before[o]) for o in expected]
    [(_, early_code, early_body)] = [a for a in answered if a[0] == early.key]
    # Before the commit the order is unknown (404), after it the rebuilt model has it: either is an answer, not a failure.
    assert early_code == 404 or (early_code, early_body["status"]) == (200, "placed"), (early_code, early_body)


def test_a_service_that_keeps_effects_refuses_to_be_rebuilt_in_one_line():
    result = run_fleet("rebuild", "payments", cwd=REPO, env=dict(os.environ))
    line = assert_fails_in_one_line(result, 64)
    assert line.startswith("payments cannot be rebuilt: its store is not a read model") and "`fleet replay`" in line


async def test_a_tracker_on_postgresql_is_rebuilt_into_a_schema_beside_it_and_swapped(kafka, group_id, postgres_url,
                                                                                      monkeypatch):
    prefix = f"ord-rbpg-{group_id[-8:]}"
    await start_group_at_end(kafka, group_id, TRACKED)
    flows = [flow_of(i, prefix) for i in range(40)]
    expected = {flow[0].key: len(flow) for flow in flows}
    keys = KeyStore.for_signer(Path(os.environ["FLEET_KEYS_DIR"]), OPERATOR_SIGNER)
    lines: list[str] = []
    monkeypatch.setenv("TRACKER_STORE_URL", postgres_url)  # what `fleet rebuild tracker` reads, as the replicas do
    monkeypatch.setenv("TRACKER_GROUP_ID", group_id)
    async with RunningApps(_tracker(kafka, group_id, postgres_url)):
        await produce_raw(kafka, [as_raw(record) for flow in flows for record in flow])
        before = await all_folded(postgres_url, expected)
        report = await rebuild_read_model(kafka, "tracker", keys, say=lines.append)
        later = a_record(an_order(order_id=f"{prefix}-later"))
        await produce_raw(kafka, [as_raw(later)])
        await all_folded(postgres_url, {later.key: 1})
    async with await open_store(postgres_url) as store:
        after = await answers(store, expected)
        async with store.transaction() as tx:
            leftovers = await tx.fetchall("SELECT nspname FROM pg_namespace WHERE nspname LIKE '%_rebuild_%'")
    assert after == before and report.swap.swapped and report.tally.folded >= sum(expected.values()), lines
    assert report.paused_here and any("resumed tracker" in line for line in lines), lines
    assert not [name for (name,) in leftovers if name.startswith(postgres_url.rsplit("%3D", 1)[1])], "schema dropped"


async def test_a_live_model_with_events_no_longer_on_the_topics_is_kept_unless_the_operator_accepts_the_loss(
        kafka, group_id, tmp_path, monkeypatch):
    store_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    async with await open_store(store_url) as store:  # as a tracker leaves it after an event's record passed retention
        await store.migrate(READ_MODEL.migrations)
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO order_status VALUES ('ord-expired', 'placed', 'f', 'c', '[]', '2026-11-01')")
            await tx.claim(group_id, "0190c0de-0000-7000-8000-00000000e0e0")
    env = {**os.environ, "FLEET_KAFKA_BOOTSTRAP_SERVERS": kafka, "TRACKER_STORE_URL": store_url, "TRACKER_GROUP_ID": group_id}
    refused = await asyncio.to_thread(run_fleet, "rebuild", "tracker", cwd=REPO, env=env, timeout_s=150)
    line = assert_fails_in_one_line(refused, 1)
    assert line.startswith(f"not swapped: 1 of the events the live read model has folded (group {group_id})"), line
    assert "resumed tracker" in refused.stdout, "the service is resumed whatever the outcome"
    keyring = KeyStore.for_signer(Path(os.environ["FLEET_KEYS_DIR"]), OPERATOR_SIGNER).keyring()
    held = await standing_orders(kafka, keyring, ["tracker"], groups={"tracker": group_id})
    assert not held["tracker"].is_paused, held
    assert (await answers_in(store_url, ["ord-expired"]))["ord-expired"]["status"] == "placed", "the live model stays"

    monkeypatch.setenv("TRACKER_STORE_URL", store_url)
    monkeypatch.setenv("TRACKER_GROUP_ID", group_id)
    keys = KeyStore.for_signer(Path(os.environ["FLEET_KEYS_DIR"]), OPERATOR_SIGNER)
    report = await rebuild_read_model(kafka, "tracker", keys, accept_missing=True)
    assert report.swap.swapped and report.accepted_missing == 1
    assert (await answers_in(store_url, ["ord-expired"]))["ord-expired"] is None
