"""`fleet status` builds its rows and its JSON from gathered facts: lag, events per second, replicas, warnings."""

import json

from fleet.ops.status import ServiceFacts, Snapshot, build_status, local_fleet, table_of

ORDERS = "orders.placed.v1"


def _payments(committed: dict, members: int = 2, **extra) -> ServiceFacts:
    return ServiceFacts(
        "payments", "payments", "Stable",
        [{"member_id": f"m{n}", "client_id": "payments", "host": "/127.0.0.1", "instance_id": None,
          "partitions": [(ORDERS, p) for p in range(6) if p % members == n]} for n in range(members)],
        {ORDERS: 6}, committed, {(ORDERS, p): 0 for p in range(6)}, {(ORDERS, p): 100 for p in range(6)}, **extra,
    )


def _local(desired: int, statuses: list[str]) -> dict:
    return {"pid": 4242, "bootstrap": "127.0.0.1:9092", "services": {"payments": desired},
            "replicas": [{"name": f"payments-{n}", "service": "payments", "index": n, "pid": 100 + n, "status": s, "restarts": 0,
                          "http_port": 8101 + 10 * (n - 1), "log": f".fleet/logs/payments-{n}.log"}
                         for n, s in enumerate(statuses, start=1)]}


def test_lag_is_end_minus_committed_per_topic_and_uncommitted_partitions_count_from_the_beginning():
    facts = _payments({(ORDERS, p): 90 for p in range(5)})  # partition 5 never committed
    [row] = build_status(Snapshot(10.0, {"payments": facts}))["services"]
    assert row["lag"] == {ORDERS: 5 * 10 + 100} and row["lag_total"] == 150


def test_events_per_second_come_from_successive_committed_offsets():
    before = Snapshot(10.0, {"payments": _payments({(ORDERS, p): 50 for p in range(6)})})
    now = Snapshot(12.0, {"payments": _payments({(ORDERS, p): 60 for p in range(6)})})
    [row] = build_status(now, before)["services"]
    assert row["events_per_s"] == 30.0  # 6 partitions × 10 records in 2 s
    [first] = build_status(now)["services"]
    assert first["events_per_s"] is None


def test_members_and_their_partitions_are_listed():
    [row] = build_status(Snapshot(1.0, {"payments": _payments({}, members=3)}))["services"]
    assert row["member_count"] == 3 and row["group_state"] == "Stable"
    assert [m["partitions"] for m in row["members"]] == [[f"{ORDERS}[0]", f"{ORDERS}[3]"], [f"{ORDERS}[1]", f"{ORDERS}[4]"],
                                                         [f"{ORDERS}[2]", f"{ORDERS}[5]"]]


def test_replicas_come_from_the_local_fleet_state_when_one_runs():
    snapshot = Snapshot(1.0, {"payments": _payments({})}, local=_local(3, ["up", "restarting", "up"]))
    document = build_status(snapshot, bootstrap="127.0.0.1:9092")
    [row] = document["services"]
    assert row["replicas"]["desired"] == 3 and row["replicas"]["up"] == 2 and row["replicas"]["restarting"] == 1
    assert [r["http_port"] for r in row["replicas"]["list"]] == [8101, 8111, 8121]
    assert document["local_fleet"]["pid"] == 4242
    assert build_status(Snapshot(1.0, {"payments": _payments({})}))["services"][0]["replicas"] is None


def test_a_warning_when_replicas_outnumber_partitions():
    snapshot = Snapshot(1.0, {"payments": _payments({}, members=6)}, local=_local(8, ["up"] * 8))
    [row] = build_status(snapshot)["services"]
    assert row["warnings"] == [f"8 replicas but {ORDERS} has only 6 partitions: 2 replica(s) get no partition of it and sit idle"]
    [fine] = build_status(Snapshot(1.0, {"payments": _payments({}, members=3)}))["services"]
    assert fine["warnings"] == []


def test_the_document_is_json_and_the_table_renders_it():
    from rich.console import Console

    snapshot = Snapshot(1.0, {"payments": _payments({}, members=2, dead_letters=4)}, local=_local(2, ["up", "up"]))
    document = build_status(snapshot, bootstrap="127.0.0.1:9092")
    assert json.loads(json.dumps(document))["services"][0]["dead_letters"] == 4
    console = Console(record=True, width=200)
    console.print(table_of(document))
    text = console.export_text()
    assert "payments" in text and "2/2 up" in text and "Stable (2)" in text and f"{ORDERS} 0,2,4" in text


def test_a_state_file_whose_process_is_gone_means_no_local_fleet(tmp_path):
    import os

    path = tmp_path / "fleet.json"
    assert local_fleet(path) is None
    path.write_text(json.dumps({"pid": 2 ** 22 + 12345, "replicas": []}))
    assert local_fleet(path) is None
    path.write_text(json.dumps({"pid": os.getpid(), "replicas": []}))
    assert local_fleet(path)["pid"] == os.getpid()


def test_a_paused_service_is_marked_with_what_is_held_by_whom_and_why_and_unknown_without_a_keyring():
    from datetime import UTC, datetime

    from contracts import ControlIssued
    from fleet.runtime.control import Held, fold

    pause = ControlIssued(service="payments", command="pause", reason="database down", issued_by="alice",
                          issued_at=datetime(2026, 12, 5, 9, 0, tzinfo=UTC))
    held, _ = fold(Held("payments"), "id-1", pause)
    document = build_status(Snapshot(1.0, {"payments": _payments({}, held=held)}))
    assert document["services"][0]["paused"] == {
        "topics": "every topic", "by": "alice", "at": "2026-12-05T09:00:00+00:00", "reason": "database down"}
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(table_of(document))
    assert "paused (every topic)" in console.export_text()
    assert build_status(Snapshot(1.0, {"payments": _payments({}, held=Held("payments"))}))["services"][0]["paused"] is False
    assert build_status(Snapshot(1.0, {"payments": _payments({})}))["services"][0]["paused"] is None
