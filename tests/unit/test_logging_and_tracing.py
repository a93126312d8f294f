"""Logs hide secrets and personal data; records carry W3C trace context that consumers continue; tracing is configurable."""

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import redacted
from contracts.tracing import with_trace_context
from fleet.runtime.observe.logs import REDACTED, merge_event_context, redact_secrets, replica_id
from fleet.runtime.observe.tracing import TracingSettings, _exporter, configure_tracing, consumer_span, trace_id_of
from tests.support import FakeRecord, a_record, an_authorization, an_order


def test_secret_looking_fields_are_redacted_whoever_logs_them():
    line = redact_secrets(None, "info", {"event": "client_added", "token": "s3cr3t", "Authorization": "Bearer abc",
                                         "private_key_path": "/k", "order_id": "ord-1"})
    assert line == {"event": "client_added", "token": REDACTED, "Authorization": REDACTED, "private_key_path": REDACTED, "order_id": "ord-1"}


def test_a_bearer_token_inside_any_text_is_redacted():
    line = redact_secrets(None, "info", {"event": "request", "detail": "sent Authorization: Bearer eyJhbGciOi.abc to gateway"})
    assert "eyJhbGciOi" not in line["detail"] and REDACTED in line["detail"]


def test_a_redacted_payload_hides_the_fields_the_contract_marks_personal_and_keeps_the_rest():
    order = an_order()
    shown = redacted(order)
    assert shown["customer_id"] == "[personal]"
    assert shown["order_id"] == order.order_id and shown["items"][0]["sku"] == order.items[0].sku
    assert redacted(an_authorization(order))["customer_id"] == "[personal]"


def test_the_replica_id_comes_from_the_supervisor_when_it_gives_one(monkeypatch):
    monkeypatch.setenv("FLEET_REPLICA_ID", "payments-2")
    assert replica_id() == "payments-2"
    monkeypatch.delenv("FLEET_REPLICA_ID")
    assert replica_id().endswith(f"-{__import__('os').getpid()}")


@pytest.fixture
def tracer_provider(monkeypatch):
    """A provider of this test only: trace's global is set once per process, so the tests ask for it directly."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer", lambda *args, **kwargs: provider.get_tracer(*args, **kwargs))
    return exporter


def test_a_record_built_at_the_edge_starts_a_trace_and_carries_its_context(tracer_provider):
    record = a_record(an_order())
    [span] = tracer_provider.get_finished_spans()
    assert span.name == "create orders.placed.v1" and span.parent is None and span.kind == trace.SpanKind.PRODUCER
    version, trace_id, parent_id, flags = record.headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", format(span.context.trace_id, "032x"), format(span.context.span_id, "016x"))
    assert int(flags, 16) & 1, "sampled"
    assert "traceparent" not in record.envelope.to_headers(), "trace context is transport, outside the signed envelope"


def test_the_consumer_span_is_the_child_of_the_producer_span_and_linked_to_it_and_what_it_emits_is_its_child(tracer_provider):
    placed = a_record(an_order())
    raw = FakeRecord(topic=placed.topic, key=placed.key.encode(), value=placed.value, headers=placed.raw_headers(), partition=3, offset=41)
    with consumer_span(raw, placed.envelope, "payments", "payments") as span:
        emitted = with_trace_context(a_record(an_authorization(), service="payments"))
        assert trace_id_of(span) == placed.headers["traceparent"].split("-")[1]
    create, nested_create, process = _by_name(tracer_provider)
    assert process.parent.span_id == create.context.span_id and [l.context.span_id for l in process.links] == [create.context.span_id]
    assert process.attributes["messaging.consumer.group.name"] == "payments" and process.attributes["messaging.kafka.offset"] == 41
    assert nested_create.parent.span_id == process.context.span_id
    assert emitted.headers["traceparent"].split("-")[1] == placed.headers["traceparent"].split("-")[1]


def _by_name(exporter):
    spans = exporter.get_finished_spans()
    creates = [s for s in spans if s.name.startswith("create")]
    process = next(s for s in spans if s.name.startswith("process"))
    return creates[0], creates[-1], process


def test_a_record_without_trace_context_starts_a_new_trace_in_its_consumer(tracer_provider):
    placed = a_record(an_order())
    raw = FakeRecord(topic=placed.topic, key=placed.key.encode(), value=placed.value, headers=[(k, v) for k, v in placed.raw_headers() if k != "traceparent"], partition=0, offset=0)
    with consumer_span(raw, placed.envelope, "payments", "payments") as span:
        assert trace_id_of(span) is not None
    process = next(s for s in tracer_provider.get_finished_spans() if s.name.startswith("process"))
    assert process.parent is None and process.links == ()


def test_a_flow_that_is_not_sampled_keeps_its_trace_id_downstream_and_records_no_spans(tracer_provider):
    placed = a_record(an_order())
    trace_id = placed.headers["traceparent"].split("-")[1]
    unsampled = [(k, f"00-{trace_id}-00f067aa0ba902b7-00".encode() if k == "traceparent" else v) for k, v in placed.raw_headers()]
    tracer_provider.clear()
    raw = FakeRecord(topic=placed.topic, key=placed.key.encode(), value=placed.value, headers=unsampled, partition=1, offset=7)
    with consumer_span(raw, placed.envelope, "payments", "payments") as span:
        emitted = with_trace_context(a_record(an_authorization(), service="payments"))
        assert trace_id_of(span) == trace_id, "log lines still name the flow's trace"
    assert tracer_provider.get_finished_spans() == (), "no span is built for a flow nobody records"
    version, emitted_trace, parent, flags = emitted.headers["traceparent"].split("-")
    assert (emitted_trace, parent, flags) == (trace_id, "00f067aa0ba902b7", "00"), "the unsampled context goes on as it came"


def test_without_an_exporter_a_consumer_builds_no_span_but_carries_the_flow_on(tracer_provider, monkeypatch):
    from fleet.runtime.observe import tracing

    monkeypatch.setattr(tracing._LOCAL, "sample_ratio", 0.5)  # as configure_tracing leaves it with FLEET_TRACING_EXPORTER=none
    placed = a_record(an_order())
    tracer_provider.clear()
    raw = FakeRecord(topic=placed.topic, key=placed.key.encode(), value=placed.value, headers=placed.raw_headers(),
                     partition=3, offset=41)
    with consumer_span(raw, placed.envelope, "payments", "payments") as span:
        assert trace_id_of(span) == placed.headers["traceparent"].split("-")[1], "the producer's flow goes on"
    assert [s.name for s in tracer_provider.get_finished_spans()] == [], "no process span was built"
    bare = FakeRecord(topic=placed.topic, key=placed.key.encode(), value=placed.value, partition=0, offset=0,
                      headers=[(k, v) for k, v in placed.raw_headers() if k != "traceparent"])
    roots = []
    for _ in range(400):
        with consumer_span(bare, placed.envelope, "payments", "payments") as span:
            roots.append(span.get_span_context())
    assert len({root.trace_id for root in roots}) == 400, "a record without context starts a flow of its own"
    assert 120 < sum(root.trace_flags.sampled for root in roots) < 280, "sampled at the ratio (0.5)"


def test_configuring_without_an_exporter_turns_the_span_building_off_and_with_one_on(monkeypatch):
    from fleet.runtime.observe import tracing

    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)  # the process's global stays as it is
    monkeypatch.setattr(tracing._LOCAL, "sample_ratio", None)
    configure_tracing("payments", TracingSettings(exporter="none", sample_ratio=0.25))
    assert tracing._LOCAL.sample_ratio == 0.25
    configure_tracing("payments", TracingSettings(exporter="console"))
    assert tracing._LOCAL.sample_ratio is None


@pytest.mark.parametrize("exporter, kind", [("none", type(None)), ("console", "ConsoleSpanExporter"),
                                            ("otlp-http", "OTLPSpanExporter"), ("otlp-grpc", "OTLPSpanExporter")])
def test_the_exporter_is_chosen_by_settings(exporter, kind):
    chosen = _exporter(TracingSettings(exporter=exporter, endpoint="http://127.0.0.1:4318/v1/traces" if exporter == "otlp-http" else None))
    assert (chosen is None) if kind is type(None) else type(chosen).__name__ == kind


def test_tracing_settings_refuse_an_unknown_exporter_and_a_ratio_outside_0_to_1():
    with pytest.raises(ValueError):
        TracingSettings(exporter="jaeger")
    with pytest.raises(ValueError):
        TracingSettings(sample_ratio=1.5)


async def _handled_lines(tmp_path, monkeypatch, payloads: str) -> list[dict]:
    import structlog
    from faststream.kafka import TestKafkaBroker

    from services.payments import PaymentsSettings
    from services.payments import create_app as create_payments
    from tests.support import in_memory

    monkeypatch.setenv("FLEET_LOG_PAYLOADS", payloads)
    app = in_memory(create_payments, PaymentsSettings(store_url=f"sqlite:///{tmp_path / 'p.db'}", http_port=0))
    record = a_record(an_order())
    with structlog.testing.capture_logs(processors=[merge_event_context]) as lines:
        async with TestKafkaBroker(app.broker):
            await app.start()
            await app.broker.publish(record.value, record.topic, key=record.key.encode(), headers=record.headers)
            await app.stop()
    return [line for line in lines if line["event"] == "event_handled" and line["event_id"] == record.envelope.id]


async def test_payloads_stay_out_of_the_logs_by_default(tmp_path, monkeypatch):
    [line] = await _handled_lines(tmp_path, monkeypatch, "false")
    assert "payload" not in line


async def test_an_opt_in_payload_log_shows_the_event_with_its_personal_fields_redacted(tmp_path, monkeypatch):
    [line] = await _handled_lines(tmp_path, monkeypatch, "true")
    assert line["payload"]["customer_id"] == "[personal]" and line["payload"]["order_id"].startswith("ord-")


@pytest.mark.parametrize("traceparent", [
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # an all-zero trace id is not valid
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # nor an all-zero span id
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # 31 hex digits
    "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",  # not hex
    "garbage",
])
def test_the_workers_own_traceparent_reading_answers_as_opentelemetrys_propagator(traceparent):
    from opentelemetry import propagate

    from fleet.runtime.observe.tracing import _traceparent

    carrier = {"traceparent": traceparent, "tracestate": "vendor=value"}
    expected = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    ours = _traceparent(carrier)
    if not expected.is_valid:
        assert ours is None
    else:
        assert (ours.trace_id, ours.span_id, ours.trace_flags, ours.is_remote, dict(ours.trace_state)) == (
            expected.trace_id, expected.span_id, expected.trace_flags, expected.is_remote, dict(expected.trace_state))


def test_the_trace_headers_written_directly_are_the_w3c_propagators_own():
    from opentelemetry import propagate

    from contracts.tracing import trace_headers

    state = trace.TraceState([("vendor", "abc"), ("other", "1")])
    for context in (trace.SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, trace.TraceFlags(0)),
                    trace.SpanContext(0x1, 0x2, True, trace.TraceFlags(0), state)):
        with trace.use_span(trace.NonRecordingSpan(context)):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            written = trace_headers(a_record(an_authorization(), service="payments"))
        assert written == tuple((k, carrier[k].encode()) for k in ("traceparent", "tracestate") if k in carrier)
