"""Payments decides by documented rules: totals must add up, currencies must be accepted, and limits hold per customer."""

import pytest

from contracts import PaymentAuthorized, PaymentDeclined
from services.payments.core import CreditPolicy, decide, payment_id_for
from tests.support import NOW, an_order, an_order_costing

POLICY = CreditPolicy(default_limit_cents=100_000, customer_limits={"cus-vip": 500_000}, currencies=frozenset({"EUR", "USD"}))


def test_an_order_within_the_limit_is_authorized_for_its_total():
    order = an_order_costing(99_999)
    outcome = decide(order, POLICY, NOW)
    assert isinstance(outcome, PaymentAuthorized)
    assert (outcome.amount_cents, outcome.currency, outcome.authorized_at) == (99_999, "EUR", NOW)


def test_an_order_exactly_at_the_limit_is_authorized():
    assert isinstance(decide(an_order_costing(100_000), POLICY, NOW), PaymentAuthorized)


def test_an_order_over_the_default_limit_is_declined():
    outcome = decide(an_order_costing(100_001), POLICY, NOW)
    assert isinstance(outcome, PaymentDeclined) and outcome.reason == "over_limit"


def test_a_customer_with_their_own_limit_may_spend_more():
    assert isinstance(decide(an_order_costing(400_000, customer_id="cus-vip"), POLICY, NOW), PaymentAuthorized)
    assert decide(an_order_costing(500_001, customer_id="cus-vip"), POLICY, NOW).reason == "over_limit"


def test_a_currency_that_is_not_accepted_is_declined():
    assert decide(an_order(currency="JPY"), POLICY, NOW).reason == "unsupported_currency"


def test_a_total_that_is_not_the_sum_of_the_lines_is_declined_first():
    order = an_order(lines=(("SKU-A", 2, 100),), total_cents=150, currency="JPY")
    assert decide(order, POLICY, NOW).reason == "total_mismatch"


def test_a_decline_states_the_amount_that_was_asked_for():
    order = an_order_costing(250_000)
    outcome = decide(order, POLICY, NOW)
    assert isinstance(outcome, PaymentDeclined)
    assert (outcome.order_id, outcome.customer_id, outcome.amount_cents, outcome.currency, outcome.declined_at) == (
        order.order_id, order.customer_id, 250_000, "EUR", NOW)


def test_the_same_order_always_yields_the_same_payment_id():
    order = an_order(order_id="ord-9")
    assert payment_id_for(order) == "pay-ord-9" == decide(order, POLICY, NOW).payment_id


@pytest.mark.parametrize("cents", [0, 1, 50_000])
def test_small_orders_are_authorized(cents):
    assert isinstance(decide(an_order_costing(cents), POLICY, NOW), PaymentAuthorized)
