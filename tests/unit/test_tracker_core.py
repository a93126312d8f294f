"""The tracker folds an order's events into its status and history, whatever order they arrive in, each once."""

from contracts import Envelope, REGISTRY
from services.tracker.core import apply
from services.payments.core import CreditPolicy, decide
from tests.support import NOW, an_authorization, an_order_v2 as an_order


def _envelope(event, event_id: str, time: str) -> Envelope:
    topic = REGISTRY.of(event)
    return Envelope(id=event_id, source="/eventfleet/test", type=topic.type_name, time=time, dataschema=topic.schema_id,
                    subject=topic.key_of(event), correlation_id="flow-1")


def test_an_order_moves_through_its_stages_and_keeps_its_history_in_time_order():
    order = an_order(order_id="ord-1")
    status = apply(None, order, _envelope(order, "e1", "2026-11-24T16:00:00Z"))
    assert status.status == "placed" and status.correlation_id == "flow-1" and status.customer_id == order.customer_id
    payment = an_authorization(order)
    status = apply(status, payment, _envelope(payment, "e2", "2026-11-24T16:00:01Z"))
    assert status.status == "payment_authorized"
    assert [h.event_id for h in status.history] == ["e1", "e2"]


def test_a_late_event_of_an_earlier_stage_does_not_move_the_status_back():
    order = an_order(order_id="ord-2")
    payment = an_authorization(order)
    status = apply(None, payment, _envelope(payment, "e2", "2026-11-24T16:00:01Z"))
    status = apply(status, order, _envelope(order, "e1", "2026-11-24T16:00:00Z"))
    assert status.status == "payment_authorized"
    assert [h.event_id for h in status.history] == ["e1", "e2"]


def test_an_event_seen_twice_is_applied_once():
    order = an_order(order_id="ord-3")
    once = apply(None, order, _envelope(order, "e1", "2026-11-24T16:00:00Z"))
    assert apply(once, order, _envelope(order, "e1", "2026-11-24T16:00:00Z")) == once


def test_a_decline_ends_the_flow_at_the_payment_stage():
    order = an_order(order_id="ord-4", currency="JPY")
    decline = decide(order, CreditPolicy(), NOW)
    status = apply(apply(None, order, _envelope(order, "e1", "2026-11-24T16:00:00Z")), decline, _envelope(decline, "e2", "2026-11-24T16:00:01Z"))
    assert status.status == "payment_declined"
