"""Inventory reserves all of a paid order or none of it, and says exactly what is short."""

from contracts import InventoryBackordered, InventoryReserved, OrderItem
from services.inventory.core import reserve, wanted
from tests.support import NOW, an_authorization, an_order


def _lines(*lines):
    return tuple(OrderItem(sku=s, quantity=q, unit_price_cents=100) for s, q in lines)


def test_an_order_in_stock_is_reserved_and_the_stock_goes_down():
    payment = an_authorization(an_order(order_id="ord-1"))
    result = reserve(payment, _lines(("A", 2), ("B", 1)), {"A": 5, "B": 1, "C": 9}, NOW)
    assert isinstance(result.outcome, InventoryReserved)
    assert result.outcome.reservation_id == "rsv-ord-1"
    assert [(l.sku, l.quantity) for l in result.outcome.items] == [("A", 2), ("B", 1)]
    assert result.stock_after == {"A": 3, "B": 0, "C": 9}


def test_one_short_line_backorders_the_whole_order_and_reserves_nothing():
    result = reserve(an_authorization(), _lines(("A", 2), ("B", 3)), {"A": 5, "B": 1}, NOW)
    assert isinstance(result.outcome, InventoryBackordered)
    assert [(m.sku, m.requested, m.available) for m in result.outcome.missing] == [("B", 3, 1)]
    assert result.stock_after == {"A": 5, "B": 1}


def test_a_product_nobody_stocked_is_short_with_nothing_available():
    result = reserve(an_authorization(), _lines(("Z", 1),), {}, NOW)
    assert [(m.sku, m.available) for m in result.outcome.missing] == [("Z", 0)]


def test_lines_of_the_same_product_add_up():
    assert wanted(_lines(("A", 2), ("B", 1), ("A", 3))) == {"A": 5, "B": 1}
    assert isinstance(reserve(an_authorization(), _lines(("A", 2), ("A", 3)), {"A": 4}, NOW).outcome, InventoryBackordered)
