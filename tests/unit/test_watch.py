"""`fleet watch` prints one readable line per event: time, topic, key, correlation id and what happened."""

from fleet.ops.watch import _line_for, describe
from contracts import REGISTRY
from tests.support import FakeRecord, a_decline, a_record, an_authorization, an_order, raw_headers


def _consumed(event, **record_fields):
    record = a_record(event, correlation_id="0123456789abcdef")
    fields = dict(topic=record.topic, partition=0, offset=0, key=record.key.encode(), value=record.value,
                  headers=raw_headers(record.headers), timestamp=1_790_000_000_000)
    return FakeRecord(**(fields | record_fields))


def test_a_line_shows_topic_key_correlation_and_the_gist():
    order = an_order(order_id="ord-abc", customer_id="cus-1", lines=(("SKU", 2, 1250),))
    line = _line_for(_consumed(order), REGISTRY)
    assert "orders.placed.v1" in line and "ord-abc" in line and "corr=0123456789abcdef" in line
    assert "cus-1 ordered 2 item(s) for 25.00 EUR" in line


def test_outcomes_read_as_what_happened():
    assert describe(a_decline(reason="over_limit")).startswith("declined")
    assert describe(an_authorization()).startswith("authorized")


def test_an_invalid_record_is_shown_as_invalid_rather_than_crashing_the_watch():
    line = _line_for(_consumed(an_order(), value=b"{broken"), REGISTRY)
    assert "INVALID" in line
