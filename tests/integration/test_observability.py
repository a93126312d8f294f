"""One order through payments, inventory and shipping on the real broker: one trace whose spans chain producer → consumer
→ producer across the three services, and log lines that all carry the flow's correlation id, cause and trace id."""

from datetime import datetime, timezone

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from contracts import InventoryReserved, OrderPlaced, PaymentAuthorized, ShipmentScheduled, StockReceived
from fleet.runtime.observe.logs import merge_event_context
from fleet.runtime.settings import KafkaSettings
from services.inventory import InventorySettings
from services.inventory import create_app as create_inventory
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from services.shipping import ShippingSettings
from services.shipping import create_app as create_shipping
from tests.support import RunningApps, TopicReader, a_record, an_order, as_raw, produce_raw, start_group_at_end

EVENT_FIELDS = ("topic", "partition", "offset", "event_id", "event_type", "correlation_id", "causation_id", "trace_id")


@pytest.fixture
def spans(monkeypatch) -> InMemorySpanExporter:
    """The spans of this test, kept in memory. The tracer is swapped for this test only: the process-wide provider can be
    set once, and would make every other test's records carry trace headers."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer", lambda *args, **kwargs: provider.get_tracer(*args, **kwargs))
    return exporter


def _three_services(kafka: str, group_id: str):
    kafka_settings = KafkaSettings(bootstrap_servers=kafka)
    return (
        create_payments(PaymentsSettings(group_id=f"{group_id}-pay", kafka=kafka_settings, http_port=0)),
        create_inventory(InventorySettings(group_id=f"{group_id}-inv", kafka=kafka_settings, http_port=0)),
        create_shipping(ShippingSettings(group_id=f"{group_id}-shp", kafka=kafka_settings, http_port=0)),
    )


async def _ship_one_order(kafka: str, group_id: str, correlation_id: str):
    await start_group_at_end(kafka, f"{group_id}-pay", [OrderPlaced])
    await start_group_at_end(kafka, f"{group_id}-inv", [StockReceived, OrderPlaced, PaymentAuthorized])
    await start_group_at_end(kafka, f"{group_id}-shp", [InventoryReserved])
    order = an_order()
    stock = [a_record(StockReceived(receipt_id=f"rcpt-{group_id}-{item.sku}", sku=item.sku, quantity=100, received_at=datetime.now(timezone.utc)),
                      service="warehouse") for item in order.items]
    placed = a_record(order, correlation_id=correlation_id)
    with structlog.testing.capture_logs(processors=[merge_event_context]) as lines:
        async with RunningApps(*_three_services(kafka, group_id)), TopicReader(kafka, [PaymentAuthorized, InventoryReserved, ShipmentScheduled]) as reader:
            await produce_raw(kafka, [as_raw(r) for r in stock])
            await produce_raw(kafka, [as_raw(placed)])
            seen = await reader.wait_for_keys([order.order_id], per_key=3)
    return placed, seen, lines


async def test_one_trace_follows_an_order_through_three_services_producer_to_consumer(kafka, group_id, spans):
    placed, seen, _ = await _ship_one_order(kafka, group_id, f"flow-{group_id}")
    by_id = {s.context.span_id: s for s in spans.get_finished_spans()}
    flow = [s for s in by_id.values() if s.attributes.get("messaging.message.conversation_id") == f"flow-{group_id}"]

    def one(name: str, group: str | None = None):
        found = [s for s in flow if s.name == name and (group is None or s.attributes.get("messaging.consumer.group.name") == group)]
        assert found, f"no span {name} ({group}) among {sorted(s.name for s in flow)}"
        return found[-1]  # the successful attempt, when a retry came first

    edge = one("create orders.placed.v1")
    assert edge.parent is None, "the flow's trace begins at the edge"
    chain = [
        (one("process orders.placed.v1", f"{group_id}-pay"), edge),
        (one("create payments.authorized.v1"), None),
        (_processed(flow, "payments.authorized.v1", f"{group_id}-inv"), None),
        (one("create inventory.reserved.v1"), None),
        (one("process inventory.reserved.v1", f"{group_id}-shp"), None),
        (one("create shipments.scheduled.v1"), None),
    ]
    parent = edge
    for span, _ in chain:
        assert span.context.trace_id == edge.context.trace_id, f"{span.name} is in another trace"
        assert span.parent is not None and span.parent.span_id == parent.context.span_id, f"{span.name} is not a child of {parent.name}"
        if span.kind == trace.SpanKind.CONSUMER:
            assert [link.context.span_id for link in span.links] == [parent.context.span_id], f"{span.name} is not linked to its producer span"
            assert span.attributes["messaging.operation.type"] == "process"
        else:
            assert span.kind == trace.SpanKind.PRODUCER and span.attributes["messaging.operation.type"] == "create"
        parent = span
    shipped = next(s for s in seen if isinstance(s.event, ShipmentScheduled))
    assert shipped.headers["traceparent"].split("-")[1] == format(edge.context.trace_id, "032x"), "the trace id travels in the record headers"


def _processed(flow, topic: str, group: str):
    """The span that handled the event successfully: on its topic, or on one of its retry topics (inventory retries a
    payment whose order lines have not arrived yet)."""
    handled = [s for s in flow if s.name.startswith(f"process {topic}") and s.attributes.get("messaging.consumer.group.name") == group
               and s.status.is_ok]
    assert handled, f"no successful process span of {topic} for {group}"
    return handled[-1]


async def test_every_line_logged_while_handling_carries_the_flow_and_the_cause_and_nothing_leaks_after(kafka, group_id, spans):
    placed, seen, lines = await _ship_one_order(kafka, group_id, f"logs-{group_id}")
    handled = [line for line in lines if line["event"] == "event_handled" and line.get("correlation_id") == f"logs-{group_id}"]
    services_seen = {line["topic"] for line in handled}
    assert {"orders.placed.v1", "inventory.reserved.v1"} <= services_seen and any(t.startswith("payments.authorized.v1") for t in services_seen)
    for line in [line for line in lines if line.get("correlation_id") == f"logs-{group_id}"]:
        missing = [field for field in EVENT_FIELDS if field not in line]
        assert not missing, f"{line['event']} lacks {missing}"
        assert line["trace_id"] and len(line["trace_id"]) == 32
    events = {s.headers["ce_type"]: s.headers for s in seen}
    payment = events["dev.eventfleet.payments.authorized.v1"]
    reserved = events["dev.eventfleet.inventory.reserved.v1"]
    shipped = events["dev.eventfleet.shipments.scheduled.v1"]
    assert payment["ce_causationid"] == placed.envelope.id
    assert reserved["ce_causationid"] == payment["ce_id"] and shipped["ce_causationid"] == reserved["ce_id"]
    assert {payment["ce_correlationid"], reserved["ce_correlationid"], shipped["ce_correlationid"]} == {f"logs-{group_id}"}
    handled_ids = {line["event_id"] for line in handled}
    assert {placed.envelope.id, reserved["ce_id"]} <= handled_ids
    outside = [line for line in lines if "event_id" in line and line["event"] in ("replica_started", "store_opened", "outbox_published")]
    assert not outside, f"event context leaked into lines written outside a handler: {outside[:3]}"
