"""`fleet trace`, pure: a flow's records as the broker holds them become one timeline, in time order, each record once,
with retries and dead letters said plainly, and broken headers shown rather than crashing it."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from contracts import REGISTRY, Record, encode, source_of
from fleet.runtime.errors import TransientError
from fleet.runtime.delivery.dead_letters import Rejection
from fleet.runtime.delivery.retries import failure_headers, retry_record
from fleet.ops.timeline import (
    DEAD_LETTER,
    PUBLISHED,
    RETRY,
    TraceRecord,
    build_timeline,
    correlation_ids_of_order,
    entry_of,
    format_header,
    format_lines,
    format_summary,
    header_text,
    matches,
    parse_since,
    service_of,
    short_type,
    timeline_json,
)
from fleet.cli.trace import flow_topics
from tests.support import a_decline, a_record, an_authorization, an_order, signer_of

FLOW = "flow-trace-1"
T0 = datetime(2026, 11, 24, 16, 0, tzinfo=timezone.utc)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def on_wire(record: Record, *, offset: int, at: datetime, partition: int = 0, topic: str | None = None, headers=None) -> TraceRecord:
    """A record as the trace reads it back: its position, its raw headers and the broker's append time."""
    raw = list(record.raw_headers() if headers is None else headers)
    return TraceRecord(topic or record.topic, partition, offset, record.key.encode(), tuple(raw), ms(at))


def caused(event, cause: Record, service: str, at: datetime) -> Record:
    """The record a service emits for an event it handled: same flow, caused by the handled event."""
    return encode(event, source=source_of(service), signer=signer_of(service), cause=cause.envelope, now=at)


class Flow:
    """An order that payments authorized and notifications told the customer about, all in flow FLOW."""

    def __init__(self, correlation_id: str = FLOW, start: datetime = T0) -> None:
        self.order_event = an_order()
        self.order = a_record(self.order_event, correlation_id=correlation_id, now=start)
        self.payment = caused(an_authorization(self.order_event), self.order, "payments", start + timedelta(milliseconds=40))
        from contracts import NotificationSent

        notification = NotificationSent(
            notification_id=f"ntf-{self.order_event.order_id}-payment_authorized", order_id=self.order_event.order_id,
            customer_id=self.order_event.customer_id, channel="email", template="payment_authorized", sent_at=start,
        )
        self.notification = caused(notification, self.payment, "notifications", start + timedelta(milliseconds=90))
        self.start = start

    def records(self) -> list[TraceRecord]:
        return [
            on_wire(self.order, offset=10, at=self.start + timedelta(milliseconds=5)),
            on_wire(self.payment, offset=20, at=self.start + timedelta(milliseconds=45)),
            on_wire(self.notification, offset=30, at=self.start + timedelta(milliseconds=95)),
        ]


def a_retry(record: Record, *, attempt: int = 1, group: str = "inventory", reason: str = "order lines not here yet",
            at: datetime = T0) -> TraceRecord:
    """The record a consumer puts on retry topic `attempt` after its handler failed, exactly as fleet.runtime.delivery.retries builds it."""
    topic = REGISTRY.resolve(record.topic)
    failure = failure_headers(record.raw_headers(), attempt=attempt, group=group, error=TransientError(reason),
                              origin=(record.topic, 0, 20), now=at)
    moved, extra = retry_record(topic, attempt, record.key, record.value, record.envelope, record.raw_headers(), failure,
                                ms(at) + 1000, signer_of(group if group in ("inventory", "payments") else "payments"), at)
    return on_wire(moved, offset=3, at=at, headers=moved.raw_headers() + extra)


def a_dead_letter(record: Record, *, reason: str = "bad_signature", group: str = "payments", at: datetime = T0,
                  offset: int = 4, headers=None) -> TraceRecord:
    """The record a consumer puts on `<topic>.dlq`, exactly as fleet.runtime.delivery.dead_letters writes it."""
    original = tuple(record.raw_headers() if headers is None else headers)
    refused = Rejection(record.topic, 0, 11, record.key.encode(), record.value, original, reason, f"refused: {reason}")
    dlq = REGISTRY.resolve(record.topic).dead_letter_topic
    return on_wire(record, offset=offset, at=at, topic=dlq, headers=refused.dead_letter_headers(group, group))


# ---- The flow -------------------------------------------------------------------------------------------------------


def test_a_flow_reads_as_order_then_payment_then_notification_each_naming_its_service_and_cause():
    flow = Flow()
    timeline = build_timeline(flow.records(), FLOW)
    assert [(e.service, e.event_type, e.caused_by, e.outcome) for e in timeline.entries] == [
        ("storefront", "OrderPlaced", None, "published"),
        ("payments", "PaymentAuthorized", "OrderPlaced", "published"),
        ("notifications", "NotificationSent", "PaymentAuthorized", "published"),
    ]
    assert [e.event_id for e in timeline.entries] == [flow.order.envelope.id, flow.payment.envelope.id, flow.notification.envelope.id]
    assert timeline.entries[1].causation_id == flow.order.envelope.id
    assert [e.position for e in timeline.entries] == ["orders.placed.v1[0]@10", "payments.authorized.v1[0]@20", "notifications.sent.v1[0]@30"]


def test_records_of_other_flows_are_left_out():
    mine, theirs = Flow(), Flow(correlation_id="another-flow")
    timeline = build_timeline(theirs.records() + mine.records() + [on_wire(a_record(an_order()), offset=1, at=T0)], FLOW)
    assert {e.correlation_id for e in timeline.entries} == {FLOW}
    assert len(timeline.entries) == 3


def test_entries_are_sorted_by_broker_time_whatever_order_they_were_read_in():
    flow = Flow()
    shuffled = list(reversed(flow.records()))
    assert [e.event_type for e in build_timeline(shuffled, FLOW).entries] == ["OrderPlaced", "PaymentAuthorized", "NotificationSent"]


def test_broker_time_orders_the_timeline_even_when_a_producer_clock_is_behind():
    """A dead letter keeps its event's ce_time; when it was dead-lettered is the broker's append time."""
    flow = Flow()
    late = a_dead_letter(flow.order, group="tracker", at=T0 + timedelta(seconds=5))
    timeline = build_timeline([late, *flow.records()], FLOW)
    assert [e.kind for e in timeline.entries] == [PUBLISHED, PUBLISHED, PUBLISHED, DEAD_LETTER]
    assert timeline.entries[-1].ce_time == flow.order.envelope.time


def test_without_a_broker_time_the_ce_time_orders_the_entries():
    flow = Flow()
    records = [TraceRecord(r.topic, r.partition, r.offset, r.key, r.headers, -1) for r in reversed(flow.records())]
    timeline = build_timeline(records, FLOW)
    assert [e.event_type for e in timeline.entries] == ["OrderPlaced", "PaymentAuthorized", "NotificationSent"]
    assert timeline.entries[0].broker_timestamp_ms == -1
    assert timeline_json(timeline)["entries"][0]["broker_timestamp_ms"] is None


def test_a_cause_outside_the_timeline_is_shown_by_its_id():
    flow = Flow()
    timeline = build_timeline(flow.records()[1:], FLOW)
    assert timeline.entries[0].caused_by is None
    assert f"caused-by {flow.order.envelope.id}" in format_lines(timeline)[0]
    assert "caused-by PaymentAuthorized" in format_lines(timeline)[1]


# ---- Retries and dead letters -----------------------------------------------------------------------------------------


def test_a_retry_record_says_which_attempt_was_scheduled_by_which_group_and_why():
    flow = Flow()
    retry = a_retry(flow.payment, attempt=2, group="inventory", reason="order lines have not arrived", at=T0 + timedelta(seconds=1))
    [entry] = build_timeline([retry], FLOW).entries
    assert entry.kind == RETRY and entry.topic == "payments.authorized.v1.retry.2"
    assert (entry.retry_attempt, entry.retry_group, entry.retry_reason) == (2, "inventory", "order lines have not arrived")
    assert entry.outcome == "retry 2 scheduled: order lines have not arrived (group inventory)"
    assert entry.service == "payments", "a retry keeps the event's ce_source"
    assert entry.event_id == flow.payment.envelope.id


def test_a_retry_record_without_its_attempt_header_takes_the_tier_from_its_topic():
    flow = Flow()
    headers = [(k, v) for k, v in a_retry(flow.payment, attempt=3).headers if k != "retry-attempt"]
    entry = entry_of(TraceRecord("payments.authorized.v1.retry.3", 0, 1, b"k", tuple(headers), ms(T0)))
    assert entry.outcome.startswith("retry 3 scheduled: ")


def test_a_dead_letter_says_which_group_refused_it_and_why():
    flow = Flow()
    letter = a_dead_letter(flow.order, reason="bad_signature", group="it-pay-1", at=T0 + timedelta(seconds=1))
    [entry] = build_timeline([letter], FLOW).entries
    assert entry.kind == DEAD_LETTER and entry.topic == "orders.placed.v1.dlq"
    assert (entry.dlq_group, entry.dlq_reason, entry.dlq_detail) == ("it-pay-1", "bad_signature", "refused: bad_signature")
    assert entry.outcome == "dead-lettered by it-pay-1: bad_signature (refused: bad_signature)"
    assert entry.service == "storefront" and entry.event_type == "OrderPlaced"


def test_a_retried_then_handled_flow_keeps_every_step_and_counts_the_event_once():
    flow = Flow()
    records = flow.records() + [a_retry(flow.payment, group="inventory", at=T0 + timedelta(milliseconds=60))]
    timeline = build_timeline(records, FLOW)
    assert [e.kind for e in timeline.entries] == [PUBLISHED, PUBLISHED, RETRY, PUBLISHED]
    assert timeline.events == 3 and timeline.retries == 1 and timeline.dead_letters == 0


def test_each_group_that_dead_lettered_an_event_has_its_own_entry():
    flow = Flow()
    letters = [a_dead_letter(flow.order, group=g, offset=i, at=T0 + timedelta(seconds=i)) for i, g in enumerate(("payments", "inventory", "tracker"))]
    timeline = build_timeline(letters, FLOW)
    assert [e.dlq_group for e in timeline.entries] == ["payments", "inventory", "tracker"]
    assert timeline.dead_letters == 3 and timeline.events == 1 and timeline.duplicates == 0


# ---- Duplicates -----------------------------------------------------------------------------------------------------


def test_a_record_published_twice_with_one_ce_id_is_shown_once_noting_both_copies():
    flow = Flow()
    again = on_wire(flow.payment, offset=21, at=T0 + timedelta(milliseconds=70), partition=0)
    timeline = build_timeline(flow.records() + [again], FLOW)
    assert len(timeline.entries) == 3
    payment = timeline.entries[1]
    assert payment.seen == 2
    assert payment.copies == ("payments.authorized.v1[0]@20", "payments.authorized.v1[0]@21")
    assert payment.offset == 20, "the first copy is the one shown"
    assert format_lines(timeline)[1].endswith("published  ×2")
    assert timeline.duplicates == 1 and timeline.events == 3
    assert "(+1 duplicate(s) shown once)" in format_summary(timeline)


def test_a_duplicate_re_signed_by_the_outbox_later_is_still_the_same_record():
    """The relay re-signs a row that waited over a minute: a new ce_time, the same ce_id."""
    from dataclasses import replace

    from contracts import sign

    flow = Flow()
    later = sign(replace(flow.payment, envelope=replace(flow.payment.envelope, time="2026-11-24T16:02:00.000000Z")), signer_of("payments"))
    copy = on_wire(later, offset=99, at=T0 + timedelta(minutes=2))
    timeline = build_timeline(flow.records() + [copy], FLOW)
    assert [e.seen for e in timeline.entries] == [1, 2, 1]


def test_the_same_dead_letter_read_twice_is_one_entry():
    flow = Flow()
    letter = a_dead_letter(flow.order, group="payments", offset=4)
    copy = TraceRecord(letter.topic, letter.partition, 5, letter.key, letter.headers, letter.timestamp + 10)
    [entry] = build_timeline([letter, copy], FLOW).entries
    assert entry.seen == 2 and entry.outcome.startswith("dead-lettered by payments: bad_signature")


def test_records_without_a_ce_id_are_never_merged():
    headers = ((("ce_correlationid", FLOW.encode())),)
    records = [TraceRecord("orders.placed.v1.dlq", 0, n, b"k", headers, ms(T0) + n) for n in range(2)]
    timeline = build_timeline(records, FLOW)
    assert len(timeline.entries) == 2
    assert {(e.service, e.event_type, e.event_id) for e in timeline.entries} == {("?", "?", None)}
    assert all(e.outcome == "dead-lettered by ?: unknown" for e in timeline.entries)


# ---- Broken headers -----------------------------------------------------------------------------------------------


def test_header_values_that_are_not_utf8_are_shown_not_fatal():
    flow = Flow()
    broken = [(k, b"\xff\xfe" if k in ("ce_subject", "ce_source", "ce_time", "ce_type") else v) for k, v in flow.order.raw_headers()]
    letter = a_dead_letter(flow.order, reason="invalid_header", headers=broken + [("x-blob", b"\x80")])
    timeline = build_timeline([letter], FLOW)
    [entry] = timeline.entries
    assert entry.service == "<2 bytes, not UTF-8>" and entry.event_type == "<2 bytes, not UTF-8>"
    assert entry.ce_time == "<2 bytes, not UTF-8>"
    assert entry.at is not None, "the broker time is still known"
    assert entry.outcome.startswith("dead-lettered by payments: invalid_header")
    assert format_lines(timeline) and format_summary(timeline)
    json.dumps(timeline_json(timeline))


def test_a_dead_letter_whose_own_headers_are_not_utf8_is_shown_too():
    flow = Flow()
    letter = a_dead_letter(flow.order)
    headers = tuple((k, b"\xc3\x28" if k in ("dlq-reason", "dlq-group") else v) for k, v in letter.headers)
    [entry] = build_timeline([TraceRecord(letter.topic, 0, 1, b"\xff", headers, letter.timestamp)], FLOW).entries
    assert entry.outcome.startswith("dead-lettered by <2 bytes, not UTF-8>: <2 bytes, not UTF-8>")
    assert entry.key == "<1 bytes, not UTF-8>"


def test_a_correlation_id_that_is_not_utf8_never_matches():
    assert not matches([("ce_correlationid", b"\xff" + FLOW.encode())], [FLOW])
    assert not matches([], [FLOW])
    assert matches([("ce_correlationid", FLOW.encode())], [FLOW])


def test_a_record_with_its_correlation_header_twice_matches_if_either_is_the_flow():
    flow = Flow()
    headers = [("ce_correlationid", b"other")] + [h for h in flow.order.raw_headers()]
    letter = a_dead_letter(flow.order, reason="duplicate_header", headers=headers)
    [entry] = build_timeline([letter], FLOW).entries
    assert entry.correlation_id == "other", "shown as the first header says"
    assert entry.dlq_reason == "duplicate_header"


def test_header_text():
    assert header_text([("a", b"x"), ("a", b"y")], "a") == "x"
    assert header_text([("a", b"\xff")], "a") == "<1 bytes, not UTF-8>"
    assert header_text([], "a") is None


# ---- Order ids ----------------------------------------------------------------------------------------------------


def test_an_order_id_finds_its_flow_from_the_records_keyed_by_it():
    flow, other = Flow(), Flow(correlation_id="someone-else")
    records = other.records() + flow.records()
    assert correlation_ids_of_order(records, flow.order_event.order_id) == [FLOW]
    assert correlation_ids_of_order(records, "ord-nobody") == []


def test_an_order_in_several_flows_lists_its_main_topic_flow_first():
    flow = Flow()
    replayed = a_record(flow.order_event, correlation_id="replayed-flow", now=T0)
    letter = a_dead_letter(replayed, at=T0 - timedelta(seconds=1))
    records = [letter, *flow.records(), on_wire(replayed, offset=50, at=T0 + timedelta(seconds=3))]
    assert correlation_ids_of_order(records, flow.order_event.order_id) == [FLOW, "replayed-flow"]
    timeline = build_timeline(records, [FLOW, "replayed-flow"], order_id=flow.order_event.order_id)
    assert len(timeline.entries) == 5
    assert f"order {flow.order_event.order_id}, correlation id {FLOW}, replayed-flow" in format_header(timeline)


def test_a_correlation_header_that_is_not_utf8_gives_no_flow_for_the_order():
    record = TraceRecord("orders.placed.v1", 0, 1, b"ord-1", (("ce_correlationid", b"\xff"),), ms(T0))
    assert correlation_ids_of_order([record], "ord-1") == []


# ---- Output -------------------------------------------------------------------------------------------------------


def test_each_line_holds_both_times_service_type_position_id_cause_and_outcome():
    flow = Flow()
    timeline = build_timeline(flow.records() + [a_dead_letter(flow.order, group="tracker", at=T0 + timedelta(seconds=2))], FLOW)
    lines = format_lines(timeline)
    assert len(lines) == 4
    first = lines[0].split()
    assert first[:4] == ["2026-11-24", "16:00:00.005", "ce", "16:00:00.000"]
    assert first[4:8] == ["storefront", "OrderPlaced", "orders.placed.v1[0]@10", flow.order.envelope.id]
    assert "caused-by -" in lines[0] and lines[0].endswith("  published")
    assert "caused-by OrderPlaced" in lines[1]
    assert lines[3].endswith("dead-lettered by tracker: bad_signature (refused: bad_signature)")
    assert len({line.index("caused-by") for line in lines}) == 1, "columns line up"


def test_the_summary_counts_events_services_duration_and_dead_letters():
    flow = Flow()
    records = flow.records() + [a_dead_letter(flow.order, group="tracker", at=T0 + timedelta(seconds=2, milliseconds=5))]
    summary = format_summary(build_timeline(records, FLOW))
    assert summary == (
        "summary: 3 event(s) in 4 record(s), 3 service(s) (storefront, payments, notifications), "
        "2026-11-24 16:00:00.005 → 16:00:02.005 (2.000 s), 1 dead letter(s), 0 retry record(s)"
    )


def test_the_summary_shows_the_date_of_a_last_entry_on_another_day():
    flow = Flow(start=T0 + timedelta(hours=7, minutes=59, seconds=59))
    records = flow.records() + [a_dead_letter(flow.order, at=T0 + timedelta(hours=8, seconds=1))]
    assert "→ 2026-11-25 00:00:01.000" in format_summary(build_timeline(records, FLOW))


def test_the_json_timeline_has_the_entries_and_the_summary_for_scripts():
    flow = Flow()
    records = flow.records() + [a_retry(flow.payment, at=T0 + timedelta(milliseconds=60)), a_dead_letter(flow.order, group="tracker", at=T0 + timedelta(seconds=1))]
    document = json.loads(json.dumps(timeline_json(build_timeline(records, FLOW, since=T0 - timedelta(hours=24)))))
    assert set(document) == {"correlation_ids", "order_id", "since", "entries", "summary"}
    assert document["correlation_ids"] == [FLOW] and document["order_id"] is None
    assert document["since"] == "2026-11-23T16:00:00.000Z"
    assert [e["kind"] for e in document["entries"]] == ["published", "published", "retry", "published", "dead_letter"]
    order = document["entries"][0]
    assert set(order) == {"time", "broker_timestamp_ms", "ce_time", "service", "event_type", "ce_type", "topic", "partition", "offset",
                          "key", "event_id", "correlation_id", "causation_id", "caused_by", "kind", "outcome", "retry",
                          "dead_letter", "seen", "copies"}
    assert order["time"] == "2026-11-24T16:00:00.005Z" and order["broker_timestamp_ms"] == ms(T0) + 5
    assert order["ce_type"] == "dev.eventfleet.orders.placed.v1" and order["key"] == flow.order_event.order_id
    assert document["entries"][1]["caused_by"] == "OrderPlaced" and document["entries"][1]["causation_id"] == flow.order.envelope.id
    assert document["entries"][2]["retry"] == {"attempt": 1, "group": "inventory", "reason": "order lines not here yet"}
    assert document["entries"][4]["dead_letter"] == {"group": "tracker", "reason": "bad_signature", "detail": "refused: bad_signature"}
    assert document["summary"] == {
        "events": 3, "records": 5, "duplicates": 0, "services": ["storefront", "payments", "notifications"],
        "first": "2026-11-24T16:00:00.005Z", "last": "2026-11-24T16:00:01.000Z", "duration_s": 0.995,
        "dead_letters": 1, "retries": 1,
    }


def test_an_empty_timeline_prints_no_lines_and_a_plain_summary():
    timeline = build_timeline([], FLOW)
    assert format_lines(timeline) == []
    assert format_summary(timeline) == "summary: 0 event(s) in 0 record(s), 0 service(s) (), 0 dead letter(s), 0 retry record(s)"


def test_a_declined_payment_reads_as_its_own_type():
    order = an_order()
    record = a_record(order, correlation_id=FLOW)
    decline = caused(a_decline(order), record, "payments", T0)
    assert [e.event_type for e in build_timeline([on_wire(decline, offset=1, at=T0)], FLOW).entries] == ["PaymentDeclined"]


def test_names():
    assert service_of("/eventfleet/payments") == "payments"
    assert service_of("urn:elsewhere") == "urn:elsewhere"
    assert service_of(None) == "?"
    assert short_type("dev.eventfleet.shipments.scheduled.v1") == "ShipmentScheduled"
    assert short_type("dev.eventfleet.orders.cancelled.v9") == "orders.cancelled.v9"
    assert short_type("com.example.thing") == "com.example.thing"


# ---- --since and the topics read ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, ago", [("24h", timedelta(hours=24)), ("90m", timedelta(minutes=90)), ("2d", timedelta(days=2)),
                                       ("30s", timedelta(seconds=30)), ("1w", timedelta(weeks=1)), ("1.5h", timedelta(minutes=90))])
def test_since_takes_a_duration(text, ago):
    assert parse_since(text, T0) == T0 - ago


def test_since_takes_a_time_in_utc():
    assert parse_since("2026-11-24T10:00:00Z", T0) == datetime(2026, 11, 24, 10, tzinfo=timezone.utc)
    assert parse_since("2026-11-24T10:00:00", T0) == datetime(2026, 11, 24, 10, tzinfo=timezone.utc)
    assert parse_since("2026-11-24T12:00:00+02:00", T0) == datetime(2026, 11, 24, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["yesterday", "", "24", "-3h", "2026-11-25T00:00:00Z"])
def test_since_refuses_anything_else(text):
    with pytest.raises(ValueError, match="--since"):
        parse_since(text, T0)


def test_the_trace_reads_every_registry_topic_with_its_retry_and_dead_letter_topics():
    names = flow_topics()
    flows = [topic for topic in REGISTRY if not topic.broadcast]
    assert len(names) == len(flows) * 5 == len(set(names))
    assert not any(name.startswith("fleet.control.v1") for name in names), "operators' commands are in no flow"
    for topic in flows:
        assert {topic.name, *topic.retry_topics, topic.dead_letter_topic} <= set(names)
    keyed = flow_topics(keyed_by_order=True)
    assert "warehouse.stock_received.v1" in names and not any(n.startswith("warehouse.") for n in keyed)
    assert "orders.placed.v1.dlq" in keyed


# ---- The command's own checks (no broker needed) ------------------------------------------------------------------


def _fleet(*args: str):
    from fleet.cli import app

    return CliRunner().invoke(app, list(args))


def test_the_command_wants_a_correlation_id_or_an_order_not_both():
    for args in (["trace"], ["trace", "abc", "--order", "ord-1"]):
        result = _fleet(*args)
        assert result.exit_code == 64 and "give a correlation id or --order" in result.output  # bad input


def test_a_bad_since_is_one_line_and_exit_64():
    result = _fleet("trace", "abc", "--since", "last week")
    assert result.exit_code == 64
    assert "--since 'last week' is neither a duration" in result.output
    assert "Traceback" not in result.output


def test_a_bootstrap_that_is_not_host_port_is_one_line_and_exit_64():
    result = _fleet("trace", "abc", "--bootstrap", "localhost:notaport")
    assert result.exit_code == 64
    assert result.output.strip().startswith("bad bootstrap address 'localhost:notaport'")
    assert len(result.output.strip().splitlines()) == 1
