"""The demo feed is realistic: valid orders whose totals add up, repeatable with a seed, with every outcome represented."""

from services.payments.core import CreditPolicy, decide
from fleet.ops.demo import CATALOGUE, demo_orders
from tests.support import NOW


def test_demo_orders_add_up_and_use_the_catalogue_prices():
    for order in demo_orders(200, seed=1, now=NOW):
        assert order.total_cents == sum(i.quantity * i.unit_price_cents for i in order.items)
        assert all(CATALOGUE[i.sku] == i.unit_price_cents for i in order.items)


def test_the_same_seed_gives_the_same_orders():
    assert list(demo_orders(20, seed=7, now=NOW)) == list(demo_orders(20, seed=7, now=NOW))


def test_order_ids_are_unique():
    ids = [o.order_id for o in demo_orders(500, seed=3, now=NOW)]
    assert len(set(ids)) == len(ids)


def test_a_demo_run_shows_authorizations_and_both_kinds_of_decline():
    outcomes = [decide(o, CreditPolicy(), NOW) for o in demo_orders(300, seed=11, now=NOW)]
    kinds = {getattr(o, "reason", "authorized") for o in outcomes}
    assert {"authorized", "over_limit", "unsupported_currency"} <= kinds


def test_a_demo_delivery_stocks_every_catalogue_product_with_few_espresso_machines():
    from fleet.ops.demo import demo_stock

    delivery = demo_stock(NOW, batch="b1")
    assert sorted(s.sku for s in delivery) == sorted(CATALOGUE)
    assert {s.sku: s.quantity for s in delivery}["SKU-ESPRESSO-006"] < {s.sku: s.quantity for s in delivery}["SKU-TEA-001"]
    assert len({s.receipt_id for s in delivery}) == len(delivery)
