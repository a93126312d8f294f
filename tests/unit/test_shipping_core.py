"""Shipping books a parcel or freight and sends it on the next working day."""

from datetime import date, datetime, timezone

from contracts import InventoryReserved, StockLine
from services.shipping.core import next_working_day, schedule

FRIDAY = datetime(2026, 11, 27, 15, 0, tzinfo=timezone.utc)


def _reservation(*units: int) -> InventoryReserved:
    return InventoryReserved(order_id="ord-1", customer_id="cus-1", reservation_id="rsv-ord-1",
                             items=tuple(StockLine(sku=f"S{n}", quantity=q) for n, q in enumerate(units)), reserved_at=FRIDAY)


def test_up_to_ten_units_go_by_parcel_and_more_by_freight():
    assert schedule(_reservation(4, 6), FRIDAY).carrier == "parcel"
    assert schedule(_reservation(4, 7), FRIDAY).carrier == "freight"


def test_a_shipment_booked_on_a_friday_leaves_on_monday():
    shipment = schedule(_reservation(1), FRIDAY)
    assert shipment.ship_by == date(2026, 11, 30) and shipment.shipment_id == "shp-ord-1" and shipment.units == 1


def test_the_next_working_day_skips_weekends_only():
    assert next_working_day(date(2026, 11, 24)) == date(2026, 11, 25)
    assert next_working_day(date(2026, 11, 28)) == date(2026, 11, 30)
