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


@pytest.mark.parametrize(("channel", "words"), [("web", "in our web shop"), ("store", "in one of our stores"), ("phone", "by phone")])
def test_the_text_names_where_the_order_was_placed_when_it_is_known(channel, words):
    without = compose(an_authorization(an_order(order_id="ord-10")), NOW)
    notification = compose(an_authorization(an_order(order_id="ord-10")), NOW, placed_through=channel)
    assert notification.body == f"{without.body} You placed this order {words}."
    assert (notification.subject, notification.sent) == (without.subject, without.sent), "only the text changes"


def test_the_text_names_no_channel_when_the_order_was_not_heard_or_its_channel_is_unknown():
    authorization = an_authorization(an_order(order_id="ord-11"))
    for placed_through in (None, "fax", ""):
        notification = compose(authorization, NOW, placed_through=placed_through)
        assert "You placed this order" not in notification.body
        assert notification.body == compose(authorization, NOW).body == "We received 25.00 EUR for order ord-11."


@pytest.mark.parametrize("outcome", [an_authorization(), a_decline()], ids=["authorized", "declined"])
def test_every_template_names_the_channel_at_the_end_of_its_text(outcome):
    notification = compose(outcome, NOW, placed_through="phone")
    assert notification.body.endswith(". You placed this order by phone.")
    assert notification.sent.notification_id == compose(outcome, NOW).sent.notification_id
