"""Notifications composes one message per payment outcome, with an id that a redelivery cannot change."""

import pytest

from services.notifications.core import DECLINE_EXPLANATIONS, compose
from tests.support import NOW, a_decline, an_authorization, an_order


def test_an_authorization_confirms_the_payment_to_the_customer():
    order = an_order(order_id="ord-5", customer_id="cus-7", lines=(("SKU", 1, 2550),))
    notification = compose(an_authorization(order), NOW)
    assert notification.sent.template == "payment_authorized"
    assert notification.sent.customer_id == "cus-7"
    assert "25.50 EUR" in notification.body and "ord-5" in notification.subject


@pytest.mark.parametrize("reason", sorted(DECLINE_EXPLANATIONS))
def test_a_decline_explains_its_reason_in_words(reason):
    notification = compose(a_decline(reason=reason), NOW)
    assert notification.sent.template == "payment_declined"
    assert DECLINE_EXPLANATIONS[reason] in notification.body


def test_the_notification_id_depends_only_on_order_and_template():
    order = an_order(order_id="ord-8")
    assert compose(an_authorization(order), NOW).sent.notification_id == "ntf-ord-8-payment_authorized"
    assert compose(a_decline(order), NOW).sent.notification_id == "ntf-ord-8-payment_declined"


def test_the_outbox_line_holds_what_the_customer_reads():
    line = compose(a_decline(), NOW).as_outbox_line()
    assert set(line) == {"notification_id", "order_id", "customer_id", "channel", "template", "subject", "body", "recorded_at"}


def test_a_backorder_tells_the_customer_what_is_short():
    from contracts import InventoryBackordered, MissingStock

    backorder = InventoryBackordered(order_id="ord-9", customer_id="cus-1", missing=(MissingStock(sku="SKU-A", requested=3, available=1),), backordered_at=NOW)
    notification = compose(backorder, NOW)
    assert notification.sent.template == "order_backordered" and "SKU-A (1 of 3 in stock)" in notification.body


def test_a_scheduled_shipment_tells_the_customer_when_it_leaves():
    from datetime import date

    from contracts import ShipmentScheduled

    shipment = ShipmentScheduled(order_id="ord-9", customer_id="cus-1", shipment_id="shp-ord-9", carrier="parcel", units=2,
                                 ship_by=date(2026, 11, 25), scheduled_at=NOW)
    notification = compose(shipment, NOW)
    assert notification.sent.template == "shipment_scheduled" and "2026-11-25" in notification.body
