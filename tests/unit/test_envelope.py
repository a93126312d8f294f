"""The wire envelope: CloudEvents binary-mode headers that round-trip, carry the flow, and refuse anything ambiguous."""

import uuid

import pytest

from contracts import REGISTRY, Envelope, EnvelopeError, InvalidPayload, Rejected, decode_value, new_event_id
from tests.support import a_record, an_authorization, an_order, raw_headers


def test_an_envelope_survives_the_trip_through_kafka_headers():
    record = a_record(an_order())
    assert Envelope.from_headers(raw_headers(record.headers)) == record.envelope


def test_a_record_carries_every_cloudevents_attribute():
    record = a_record(an_order(order_id="ord-1"), service="storefront")
    headers = record.headers
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "dev.eventfleet.orders.placed.v1"
    assert headers["ce_source"] == "/eventfleet/storefront"
    assert headers["ce_subject"] == "ord-1" == record.key
    assert headers["ce_dataschema"] == "urn:eventfleet:schema:orders.placed.v1"
    assert headers["content-type"] == "application/json"
    assert headers["ce_time"].endswith("Z")


def test_a_root_event_starts_a_flow_named_after_itself_unless_the_caller_names_it():
    root = a_record(an_order()).envelope
    assert root.correlation_id == root.id and root.causation_id is None
    named = a_record(an_order(), correlation_id="corr-from-caller").envelope
    assert named.correlation_id == "corr-from-caller"


def test_a_caused_event_inherits_the_flow_and_names_its_cause():
    order = an_order()
    cause = a_record(order, correlation_id="flow-1").envelope
    effect = Envelope.new(REGISTRY.of(an_authorization(order)), an_authorization(order), source="/eventfleet/payments", cause=cause)
    assert effect.correlation_id == "flow-1"
    assert effect.causation_id == cause.id
    assert "ce_causationid" in effect.to_headers() and "ce_causationid" not in cause.to_headers()


def test_event_ids_are_unique_uuid7s():
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(i).version == 7 for i in ids)


def test_event_ids_sort_by_creation_time():
    first = new_event_id()
    import time

    time.sleep(0.002)
    assert new_event_id() > first


@pytest.mark.parametrize("missing", ["ce_id", "ce_type", "ce_correlationid", "content-type", "ce_specversion"])
def test_a_missing_header_is_named(missing):
    headers = {k: v for k, v in a_record(an_order()).headers.items() if k != missing}
    with pytest.raises(EnvelopeError, match=missing):
        Envelope.from_headers(raw_headers(headers))


def test_a_duplicated_header_is_refused():
    headers = raw_headers(a_record(an_order()).headers) + [("ce_id", b"another-id")]
    with pytest.raises(EnvelopeError, match="ce_id appears more than once"):
        Envelope.from_headers(headers)


def test_a_header_that_is_not_utf8_is_refused():
    headers = raw_headers(a_record(an_order()).headers)
    headers = [(k, b"\xff\xfe" if k == "ce_source" else v) for k, v in headers]
    with pytest.raises(EnvelopeError, match="ce_source is not UTF-8"):
        Envelope.from_headers(headers)


def test_headers_that_are_not_ours_are_left_alone():
    headers = raw_headers(a_record(an_order()).headers) + [("traceparent", b"00-abc"), ("traceparent", b"dup")]
    assert Envelope.from_headers(headers).type == "dev.eventfleet.orders.placed.v1"


def test_a_value_decodes_to_the_topics_one_model():
    order = an_order()
    assert decode_value(REGISTRY.of(order), a_record(order).value) == order


def test_an_invalid_value_names_every_field_error():
    with pytest.raises(InvalidPayload) as error:
        decode_value(REGISTRY.named("orders.placed.v1"), b'{"order_id": "x", "items": [], "currency": "eu"}')
    for field in ("customer_id", "items", "currency", "total_cents", "placed_at"):
        assert field in str(error.value)


def test_a_value_that_is_not_json_is_invalid():
    with pytest.raises(InvalidPayload, match="JSON"):
        decode_value(REGISTRY.named("orders.placed.v1"), b"\x00not json")


def test_a_value_over_the_topics_size_limit_is_refused_before_parsing():
    topic = REGISTRY.named("orders.placed.v1")
    with pytest.raises(Rejected, match="over the topic's limit") as refused:
        decode_value(topic, b" " * (topic.max_bytes + 1))
    assert refused.value.reason == "oversize"


def test_a_record_without_a_value_is_invalid():
    with pytest.raises(InvalidPayload, match="no value"):
        decode_value(REGISTRY.named("orders.placed.v1"), None)


def test_the_raw_headers_kafka_gets_are_the_records_headers_in_the_same_order():
    """Record.raw_headers writes the envelope's headers itself (on every emit): it must say what `headers` says."""
    from dataclasses import replace

    from contracts import encode, source_of
    from tests.support.events import signer_of

    order = a_record(an_order())
    caused = encode(an_authorization(), source=source_of("payments"), signer=signer_of("payments"), cause=order.envelope)
    traced = replace(caused, transport=(("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),))
    for record in (order, caused, traced):
        assert record.raw_headers() == [(name, text.encode("utf-8")) for name, text in record.headers.items()]
    assert dict(caused.raw_headers())["ce_causationid"] == order.envelope.id.encode()
