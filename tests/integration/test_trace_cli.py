"""`fleet trace` on the real broker: an order's flow through payments and notifications, its poison siblings dead-lettered
and a retried record, read back as one timeline in time order, as text and as JSON, by correlation id or by order id."""

import json
import os
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from contracts import NotificationSent, OrderPlaced, PaymentAuthorized, PaymentDeclined
from fleet.runtime.broker import create_broker, subscriber_for
from fleet.runtime.errors import TransientError
from fleet.runtime.settings import KafkaSettings
from services.notifications import NotificationsSettings
from services.notifications import create_app as create_notifications
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import RunningApps, TopicReader, a_record, an_order, an_order_costing, as_raw, produce_raw, start_group_at_end

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / ".venv" / "bin" / "fleet"
OUTCOMES = (PaymentAuthorized, PaymentDeclined)
DLQ = "orders.placed.v1.dlq"
GROUPS = ("pay", "ntf")  # both read orders.placed.v1, so both dead-letter the flow's two poison orders


def fleet_trace(*args: str, bootstrap: str) -> subprocess.CompletedProcess:
    """The command as an operator runs it, in its own process."""
    return subprocess.run([str(FLEET), "trace", *args, "--bootstrap", bootstrap], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))


def not_utf8_subject(record):
    """The record with a ce_subject that is not UTF-8: the fleet dead-letters it, the trace must still show it."""
    headers = [(k, b"\xff\xfe-not-text" if k == "ce_subject" else v) for k, v in as_raw(record)[3]]
    return record.topic, record.key.encode(), record.value, headers


@pytest.fixture(scope="module")
async def flow(kafka):
    """One flow, run once for the module: an order payments authorizes and notifications announces, plus two poison
    orders of the same flow that payments dead-letters (one stale, one with a header that is not UTF-8), and so do
    notifications: they read the orders too (each order's channel, orders.placed.v2 and v1 through its upcaster)."""
    group = f"it-trace-{uuid.uuid4().hex[:8]}"
    correlation_id = f"flow-{group}"
    await start_group_at_end(kafka, f"{group}-pay", [OrderPlaced])
    await start_group_at_end(kafka, f"{group}-ntf", [*OUTCOMES, OrderPlaced])
    order = a_record(an_order_costing(4_200), correlation_id=correlation_id)
    stale = a_record(an_order(), correlation_id=correlation_id, now=datetime.now(timezone.utc) - timedelta(minutes=10))
    garbled = a_record(an_order(), correlation_id=correlation_id)
    bystander = a_record(an_order())  # another flow on the same topics, at the same time
    payments = create_payments(PaymentsSettings(group_id=f"{group}-pay", kafka=KafkaSettings(bootstrap_servers=kafka)))
    notifications = create_notifications(NotificationsSettings(
        group_id=f"{group}-ntf", outbox_path=Path(os.environ["NOTIFICATIONS_OUTBOX_PATH"]).with_name(f"{group}.jsonl"),
        kafka=KafkaSettings(bootstrap_servers=kafka)))
    poison_ids = {stale.envelope.id, garbled.envelope.id}
    async with RunningApps(payments, notifications), TopicReader(kafka, [NotificationSent], raw_topics=[DLQ]) as reader:
        await produce_raw(kafka, [as_raw(order), as_raw(stale), not_utf8_subject(garbled), as_raw(bystander)])

        def done(seen):
            notified = {s.key for s in seen if s.topic == "notifications.sent.v1"}
            refused = {(s.headers.get("ce_id"), s.headers.get("dlq-group")) for s in seen if s.topic == DLQ}
            return {order.key, bystander.key} <= notified and {(i, f"{group}-{g}") for i in poison_ids for g in GROUPS} <= refused

        await reader.wait_for(done, timeout_s=90)
    return {"group": group, "correlation_id": correlation_id, "order": order, "stale": stale, "garbled": garbled, "bystander": bystander}


def _json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_timeline_holds_the_order_its_payment_and_its_notification_in_time_order(kafka, flow):
    document = _json(fleet_trace(flow["correlation_id"], "--json", bootstrap=kafka))
    published = [e for e in document["entries"] if e["kind"] == "published"]
    chain = [e for e in published if e["key"] == flow["order"].key]
    assert [(e["service"], e["event_type"], e["topic"]) for e in chain] == [
        ("storefront", "OrderPlaced", "orders.placed.v1"),
        ("payments", "PaymentAuthorized", "payments.authorized.v1"),
        ("notifications", "NotificationSent", "notifications.sent.v1"),
    ]
    ours = {flow[name].envelope.id for name in ("order", "stale", "garbled")}
    assert {e["event_id"] for e in published if e["event_type"] == "OrderPlaced"} == ours, "the poison orders were published too"
    order, payment, notification = chain
    assert order["event_id"] == flow["order"].envelope.id and order["key"] == flow["order"].key
    assert (payment["causation_id"], payment["caused_by"]) == (order["event_id"], "OrderPlaced")
    assert (notification["causation_id"], notification["caused_by"]) == (payment["event_id"], "PaymentAuthorized")
    assert order["broker_timestamp_ms"] <= payment["broker_timestamp_ms"] <= notification["broker_timestamp_ms"]
    times = [e["time"] for e in document["entries"]]
    assert times == sorted(times)
    assert all(e["correlation_id"] == flow["correlation_id"] for e in document["entries"])
    assert flow["bystander"].envelope.id not in {e["event_id"] for e in document["entries"]}


def test_poison_records_of_the_flow_show_as_dead_lettered_with_their_reason(kafka, flow):
    document = _json(fleet_trace(flow["correlation_id"], "--json", bootstrap=kafka))
    letters = {(e["event_id"], e["dead_letter"]["group"]): e for e in document["entries"] if e["kind"] == "dead_letter"}
    groups = [f"{flow['group']}-{g}" for g in GROUPS]
    assert set(letters) == {(flow[name].envelope.id, group) for name in ("stale", "garbled") for group in groups}
    for group in groups:
        stale, garbled = letters[(flow["stale"].envelope.id, group)], letters[(flow["garbled"].envelope.id, group)]
        assert stale["topic"] == DLQ and stale["dead_letter"]["group"] == group
        assert stale["dead_letter"]["reason"] == "stale"
        assert stale["outcome"].startswith(f"dead-lettered by {group}: stale")
        assert garbled["dead_letter"]["reason"] == "invalid_header"
        assert garbled["service"] == "storefront" and garbled["event_type"] == "OrderPlaced"
    summary = document["summary"]
    assert summary["dead_letters"] == 4 and summary["events"] == 5 and summary["records"] == 9
    assert summary["services"] == ["storefront", "payments", "notifications"]
    assert summary["duration_s"] >= 0


def test_the_text_timeline_is_one_line_per_record_then_a_summary(kafka, flow):
    result = fleet_trace(flow["correlation_id"], bootstrap=kafka)
    assert result.returncode == 0, result.stderr
    header, *lines, summary = result.stdout.splitlines()
    assert header.startswith(f"trace of correlation id {flow['correlation_id']} since ")
    assert len(lines) == 9
    order_at = next(i for i, line in enumerate(lines) if flow["order"].envelope.id in line)
    payment_at = next(i for i, line in enumerate(lines) if "payments.authorized.v1[" in line)
    notification_at = next(i for i, line in enumerate(lines) if "notifications.sent.v1[" in line)
    assert order_at < payment_at < notification_at
    assert "payments" in lines[payment_at] and "caused-by OrderPlaced" in lines[payment_at] and lines[payment_at].endswith("published")
    assert "notifications" in lines[notification_at] and "caused-by PaymentAuthorized" in lines[notification_at]
    assert "storefront" in lines[order_at] and "orders.placed.v1[" in lines[order_at] and lines[order_at].endswith("published")
    for group in (f"{flow['group']}-{g}" for g in GROUPS):
        assert any(f"dead-lettered by {group}: stale" in line and flow["stale"].envelope.id in line for line in lines)
        assert any(f"dead-lettered by {group}: invalid_header" in line for line in lines)
    assert summary.startswith("summary: 5 event(s) in 9 record(s), 3 service(s) (storefront, payments, notifications), ")
    assert summary.endswith("4 dead letter(s), 0 retry record(s)")


def test_an_order_id_finds_its_flow(kafka, flow):
    document = _json(fleet_trace("--order", flow["order"].key, "--json", bootstrap=kafka))
    assert document["order_id"] == flow["order"].key
    assert document["correlation_ids"] == [flow["correlation_id"]]
    assert [e["event_type"] for e in document["entries"] if e["key"] == flow["order"].key] == ["OrderPlaced", "PaymentAuthorized", "NotificationSent"]
    assert document["summary"]["dead_letters"] == 4, "the flow's other records are in its timeline too"


def test_since_after_the_flow_finds_nothing(kafka, flow):
    later = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat(timespec="seconds").replace("+00:00", "Z")
    time.sleep(1.5)  # `later` must be in the past when the command parses it
    result = fleet_trace(flow["correlation_id"], "--since", later, bootstrap=kafka)
    assert result.returncode == 1 and "no records of correlation id" in result.stderr
    assert _json(fleet_trace(flow["correlation_id"], "--since", "1h", "--json", bootstrap=kafka))["summary"]["records"] == 9


def test_nothing_matching_is_said_plainly_with_exit_1(kafka):
    for extra in ((), ("--json",)):
        result = fleet_trace(f"no-such-flow-{uuid.uuid4().hex}", *extra, bootstrap=kafka)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith("no records of correlation id no-such-flow-")
    result = fleet_trace("--order", f"ord-nobody-{uuid.uuid4().hex[:8]}", bootstrap=kafka)
    assert result.returncode == 1 and result.stderr.startswith("no records of order ord-nobody-")


def test_an_unreachable_broker_is_a_one_line_error():
    result = fleet_trace("anything", bootstrap="127.0.0.1:1")
    assert result.returncode == 69  # the broker is unavailable (README, Exit codes)
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("the broker at 127.0.0.1:1 did not answer: KafkaConnectionError")
    assert "Traceback" not in result.stderr


async def test_a_retried_record_shows_the_retry_that_was_scheduled(kafka, group_id):
    """A handler fails once, transiently: the flow shows the order, then the retry its group scheduled, with the reason."""
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    attempts: list[str] = []
    broker = create_broker("payments", KafkaSettings(bootstrap_servers=kafka))

    async def on_order_placed(order: OrderPlaced) -> None:
        attempts.append(order.order_id)
        if len(attempts) == 1:
            raise TransientError("the ledger is busy")

    subscriber_for(broker, OrderPlaced, group_id=group_id, retry_delays_s=(0.2,))(on_order_placed)
    worker = type("Worker", (), {"broker": broker})()
    correlation_id = f"flow-{group_id}"
    order = a_record(an_order(), correlation_id=correlation_id)
    async with RunningApps(worker), TopicReader(kafka, [OrderPlaced]) as reader:
        await produce_raw(kafka, [as_raw(order)])
        await reader.wait_for(lambda _: len(attempts) >= 2, timeout_s=60)
    document = _json(fleet_trace(correlation_id, "--json", bootstrap=kafka))
    assert [(e["kind"], e["topic"]) for e in document["entries"]] == [("published", "orders.placed.v1"), ("retry", "orders.placed.v1.retry.1")]
    retry = document["entries"][1]
    assert retry["retry"] == {"attempt": 1, "group": group_id, "reason": "the ledger is busy"}
    assert retry["outcome"] == f"retry 1 scheduled: the ledger is busy (group {group_id})"
    assert retry["event_id"] == order.envelope.id and retry["service"] == "storefront"
    assert document["summary"] | {"first": None, "last": None, "duration_s": None} == {
        "events": 1, "records": 2, "duplicates": 0, "services": ["storefront"], "first": None, "last": None,
        "duration_s": None, "dead_letters": 0, "retries": 1,
    }


async def test_a_record_published_twice_is_shown_once_with_its_count(kafka, group_id):
    """The outbox publishes at least once: the same event (one ce_id) twice on the wire is one line, marked ×2."""
    correlation_id = f"flow-{group_id}"
    order = a_record(an_order(), correlation_id=correlation_id)
    await produce_raw(kafka, [as_raw(order), as_raw(order)])
    result = fleet_trace(correlation_id, bootstrap=kafka)
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines()[1:-1]]
    assert order.envelope.id in line and line.endswith("published  ×2")
    document = _json(fleet_trace(correlation_id, "--json", bootstrap=kafka))
    [entry] = document["entries"]
    assert entry["seen"] == 2 and len(set(entry["copies"])) == 2
    assert document["summary"]["duplicates"] == 1
