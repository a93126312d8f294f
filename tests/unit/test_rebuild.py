"""`fleet rebuild`'s pure parts and its stores, without a broker: which services may be rebuilt and why the others may
not, the fold of verified records into a fresh store, and the swap of two SQLite files in one transaction while a
reader keeps reading."""

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts import REGISTRY
from fleet import catalog
from fleet.catalog import NotRebuildable, UnknownService, rebuildable
from fleet.ops.rebuild import Folder, Tally, definitely_missing
from fleet.ops.rebuild_stores import NoLiveStore, StoreNotRebuildable, fresh_store_beside, swap_sqlite, with_search_path
from fleet.runtime.keys import KeyStore
from fleet.runtime.store import open_store
from services.tracker import READ_MODEL, order_status
from services.tracker.app import track
from tests.support import FakeRecord, a_record, an_authorization, an_order, raw_headers

GROUP = "tracker-live"
NOW = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)


# ---- Which services may be rebuilt ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "effects"),
    [
        ("payments", "the payments it authorized or declined"),
        ("inventory", "the stock it reserved"),
        ("shipping", "the shipments it booked"),
        ("notifications", "the notifications it sent"),
    ],
)
def test_a_service_that_keeps_effects_refuses_with_what_it_keeps_and_where_to_go_instead(service, effects):
    with pytest.raises(NotRebuildable) as refused:
        rebuildable(service)
    line = str(refused.value)
    assert line.startswith(f"{service} cannot be rebuilt: its store is not a read model")
    assert f"({effects})" in line and "neither redo nor undo" in line and "`fleet replay`" in line
    assert "\n" not in line


def test_the_gateway_is_not_rebuilt_it_serves_the_trackers_model():
    with pytest.raises(NotRebuildable, match="gateway cannot be rebuilt: it is an HTTP service .* rebuild the tracker"):
        rebuildable("gateway")


def test_an_unknown_service_is_the_catalogs_unknown_service():
    with pytest.raises(UnknownService, match="unknown service 'trackr'"):
        rebuildable("trackr")


def test_the_tracker_is_rebuilt_with_its_own_model_in_its_replicas_group_and_store(monkeypatch):
    monkeypatch.setenv("TRACKER_GROUP_ID", "tracker-blue")
    monkeypatch.setenv("TRACKER_STORE_URL", "sqlite:////srv/tracker.db")
    target = rebuildable("tracker")
    assert (target.group, target.store_url, target.model) == ("tracker-blue", "sqlite:////srv/tracker.db", READ_MODEL)
    assert READ_MODEL.fold is track and READ_MODEL.tables == ("order_status",)


def test_only_the_tracker_declares_a_read_model():
    assert [entry.name for entry in catalog.CATALOG if entry.read_model] == ["tracker"]
    assert all(entry.effects for entry in catalog.CATALOG if entry.kind == "worker" and not entry.read_model)


# ---- When the rebuild gives up on events ----------------------------------------------------------------------------


def test_an_event_missing_twice_around_a_read_is_missing_for_good():
    assert definitely_missing(frozenset({"e1", "e2"}), frozenset({"e2", "e3"})) == {"e2"}


def test_events_missing_at_the_first_attempt_get_a_read_before_they_count_as_lost():
    assert definitely_missing(frozenset({"e1"}), frozenset()) == frozenset()


def test_the_tally_says_what_was_folded_and_why_records_were_refused():
    tally = Tally(read=1_205, folded=1_000, repeats=5)
    tally.refused.update({"unknown_key": 150, "bad_signature": 50})
    assert tally.line() == (
        "1,205 records read: 1,000 folded, 5 repeats, 200 refused (unknown_key 150, bad_signature 50)"
    )


# ---- PostgreSQL's fresh schema --------------------------------------------------------------------------------------


def test_the_fresh_schemas_url_adds_its_search_path_after_the_options_there_were():
    url = "postgresql://fleet@db:5432/fleet?options=-csearch_path%3Dlive%20-cstatement_timeout%3D5000&sslmode=require"
    assert with_search_path(url, "live_rebuild_x") == (
        "postgresql://fleet@db:5432/fleet?sslmode=require"
        "&options=-csearch_path%3Dlive%20-cstatement_timeout%3D5000%20-csearch_path%3Dlive_rebuild_x"
    )
    assert with_search_path("postgresql://db/fleet", "s") == "postgresql://db/fleet?options=-csearch_path%3Ds"


# ---- The fresh store beside the live one ----------------------------------------------------------------------------


async def live_store(path: Path, statuses=(), claims=()) -> None:
    """A tracker's store as its replicas leave it: the model's rows and the group's claims."""
    async with await open_store(f"sqlite:///{path}") as store:
        await store.migrate(READ_MODEL.migrations)
        async with store.transaction() as tx:
            for order_id, status in statuses:
                await tx.execute(
                    "INSERT INTO order_status VALUES (?, ?, 'flow', 'cus', '[]', '2026-12-05')", (order_id, status)
                )
            for group, event_id in claims:
                await tx.execute("INSERT INTO inbox VALUES (?, ?, 1)", (group, event_id))


async def test_the_fresh_store_is_a_migrated_file_beside_the_live_one_deleted_afterwards(tmp_path):
    live = tmp_path / "tracker.db"
    await live_store(live)
    async with fresh_store_beside(f"sqlite:///{live}", READ_MODEL, now=NOW) as fresh:
        assert fresh.where == f"{live}.rebuild-20261205T093000Z" and Path(fresh.where).is_file()
        async with fresh.store.transaction() as tx:
            assert await tx.fetchall("SELECT * FROM order_status") == []
    assert [p.name for p in tmp_path.iterdir()] == ["tracker.db"]


async def test_without_a_live_store_there_is_nothing_to_rebuild_and_nothing_is_created(tmp_path):
    with pytest.raises(NoLiveStore, match="no store at .*nothing to rebuild"):
        async with fresh_store_beside(f"sqlite:///{tmp_path / 'tracker.db'}", READ_MODEL, now=NOW):
            pass
    assert list(tmp_path.iterdir()) == []


async def test_a_store_of_another_service_is_not_swapped_into(tmp_path):
    other = tmp_path / "payments.db"
    await (await open_store(f"sqlite:///{other}")).close()  # an inbox and an outbox, no order_status
    with pytest.raises(NoLiveStore, match="has no table order_status"):
        async with fresh_store_beside(f"sqlite:///{other}", READ_MODEL, now=NOW):
            pass


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "mysql://db/tracker"])
async def test_a_store_no_other_process_can_open_is_refused(url):
    with pytest.raises(StoreNotRebuildable, match=f"cannot rebuild beside {url}"):
        async with fresh_store_beside(url, READ_MODEL, now=NOW):
            pass


# ---- Folding verified records ---------------------------------------------------------------------------------------


def as_consumed(record, offset: int = 0) -> FakeRecord:
    return FakeRecord(record.topic, 0, offset, record.key.encode(), record.value, raw_headers(record.headers), 0)


async def test_records_are_verified_then_folded_once_under_the_services_group(tmp_path, keys_dir):
    live = tmp_path / "tracker.db"
    await live_store(live)
    placed = an_order()
    order, paid = a_record(placed), a_record(an_authorization(placed), service="payments")
    forged = a_record(an_order(), service="payments")  # payments may not sign orders.placed.v1
    records = [as_consumed(order, 0), as_consumed(paid, 1), as_consumed(order, 2), as_consumed(forged, 3)]
    target = catalog.Rebuildable("tracker", GROUP, f"sqlite:///{live}", READ_MODEL)
    keyring = KeyStore.for_signer(keys_dir, "operator").keyring()
    async with fresh_store_beside(target.store_url, READ_MODEL, now=NOW) as fresh:
        folder = Folder(fresh, target, keyring, REGISTRY)
        tally = await folder._fold_in_one_transaction(records)
        answer = await order_status(fresh.store, placed.order_id)
        async with fresh.store.transaction() as tx:
            claims = await tx.fetchall("SELECT group_id, event_id FROM inbox ORDER BY event_id")
    assert (tally.read, tally.folded, tally.repeats, dict(tally.refused)) == (4, 2, 1, {"key_not_allowed": 1})
    assert answer["status"] == "payment_authorized" and len(answer["history"]) == 2
    assert claims == sorted([(GROUP, order.envelope.id), (GROUP, paid.envelope.id)], key=lambda c: c[1])


# ---- The swap of two SQLite files -----------------------------------------------------------------------------------


def rows(path: Path, sql: str) -> list[tuple]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


MODEL = "SELECT order_id, status FROM order_status ORDER BY order_id"
CLAIMS = "SELECT group_id, event_id FROM inbox ORDER BY group_id, event_id"


async def two_stores(tmp_path) -> tuple[Path, Path]:
    live, fresh = tmp_path / "tracker.db", tmp_path / "tracker.db.rebuild"
    await live_store(live, [("o1", "placed"), ("o2", "placed")], [(GROUP, "e1"), (GROUP, "e2"), ("another", "x9")])
    await live_store(
        fresh,
        [("o1", "payment_authorized"), ("o2", "placed"), ("o3", "placed")],
        [(GROUP, "e1"), (GROUP, "e2"), (GROUP, "e3"), (GROUP, "e4")],
    )
    return live, fresh


async def test_the_swap_replaces_the_model_and_the_groups_claims_in_one_transaction_while_a_reader_reads(tmp_path):
    live, fresh = await two_stores(tmp_path)
    reader = sqlite3.connect(live, isolation_level=None)  # a reader's connection, open before and after the swap
    seen_in_the_swap: list = []

    def read_while_locked() -> None:
        # Inside the swap's transaction, its changes made and not committed: the reader reads the old model, without
        # waiting for the write lock or failing.
        seen_in_the_swap.append(reader.execute(MODEL).fetchall())

    swap = swap_sqlite(live, fresh, ("order_status",), GROUP, before_commit=read_while_locked)
    assert seen_in_the_swap == [[("o1", "placed"), ("o2", "placed")]]
    assert reader.execute(MODEL).fetchall() == rows(fresh, MODEL), "the same connection sees the new model at once"
    reader.close()
    assert (swap.swapped, swap.rows, swap.claims) == (True, 3, 4)
    assert rows(live, CLAIMS) == [("another", "x9")] + rows(fresh, CLAIMS), "another group's claims stay"


async def test_a_swap_that_would_lose_an_event_of_the_live_model_changes_nothing_and_says_which(tmp_path):
    live, fresh = await two_stores(tmp_path)
    await live_store(live, claims=[(GROUP, "e0")])  # folded by the live model, never by the rebuild
    before = rows(live, MODEL), rows(live, CLAIMS)
    swap = swap_sqlite(live, fresh, ("order_status",), GROUP)
    assert (swap.swapped, swap.missing) == (False, {"e0"})
    assert (rows(live, MODEL), rows(live, CLAIMS)) == before
    accepted = swap_sqlite(live, fresh, ("order_status",), GROUP, frozenset({"e0"}))
    assert accepted.swapped and rows(live, MODEL) == rows(fresh, MODEL)


async def test_a_swap_that_fails_midway_leaves_the_live_store_as_it_was(tmp_path):
    live, fresh = await two_stores(tmp_path)
    before = rows(live, MODEL), rows(live, CLAIMS)

    def crash() -> None:
        raise RuntimeError("the disk is full")

    with pytest.raises(RuntimeError, match="the disk is full"):
        swap_sqlite(live, fresh, ("order_status",), GROUP, before_commit=crash)
    assert (rows(live, MODEL), rows(live, CLAIMS)) == before


async def test_a_fresh_file_that_exists_is_another_rebuilds_and_is_left_alone(tmp_path):
    live = tmp_path / "tracker.db"
    await live_store(live)
    theirs = Path(f"{live}.rebuild-20261205T093000Z")
    theirs.write_bytes(b"another rebuild's")
    with pytest.raises(FileExistsError, match="another rebuild is under way"):
        async with fresh_store_beside(f"sqlite:///{live}", READ_MODEL, now=NOW):
            pass
    assert theirs.read_bytes() == b"another rebuild's"
