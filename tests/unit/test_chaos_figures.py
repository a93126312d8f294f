"""The chaos figures catch what they claim to: a lost order, a second effect, a per-key inversion, a wrong dead letter."""

from dataclasses import replace

from tests.chaos.figures import Expected, Observed, Poison, WireEvent, figures_of

ORDERS = {"ord-1": "shipped", "ord-2": "declined", "ord-3": "backordered"}
POISON = Poison("bad signature", "orders.placed.v1", 2, 40, "bad_signature", ("payments", "tracker"))


def a_clean_run() -> tuple[Expected, Observed]:
    wire = [
        WireEvent("payments.authorized.v1", 0, 0, "ord-1", "pay-1"),
        WireEvent("inventory.reserved.v1", 0, 0, "ord-1", "res-1"),
        WireEvent("shipments.scheduled.v1", 0, 0, "ord-1", "shp-1"),
        WireEvent("payments.declined.v1", 1, 0, "ord-2", "dec-2"),
        WireEvent("payments.authorized.v1", 1, 0, "ord-3", "pay-3"),
        WireEvent("inventory.backordered.v1", 1, 0, "ord-3", "bo-3"),
    ]
    receipts = [WireEvent("warehouse.stock_received.v1", 0, n, "SKU-A", f"rcpt-{n}") for n in range(3)]
    observed = Observed(
        wire=wire + receipts,
        ledger=["ord-1", "ord-3"],
        stock={"SKU-A": 7},
        notifications=[("ord-1", "payment_authorized"), ("ord-1", "shipment_scheduled"), ("ord-2", "payment_declined"),
                       ("ord-3", "payment_authorized"), ("ord-3", "order_backordered")],
        feed=["ntf-1a", "ntf-1s", "ntf-2d", "ntf-3a", "ntf-3b"],
        statuses={"ord-1": "shipment_scheduled", "ord-2": "payment_declined", "ord-3": "backordered"},
        stock_handled=["rcpt-0", "rcpt-1", "rcpt-2"],
        receipts=receipts,
        retried=set(),
        dead_letters=[("orders.placed.v1", 2, 40, "payments", "bad_signature"), ("orders.placed.v1", 2, 40, "tracker", "bad_signature")],
    )
    return Expected(outcomes=dict(ORDERS), stock={"SKU-A": 7}, poison=[POISON]), observed


def test_a_clean_run_passes_with_every_figure_at_zero():
    figures = figures_of(*a_clean_run())
    assert figures.passed
    assert (figures.lost, figures.wrong_outcome, figures.inversions) == (0, 0, 0)
    assert not any(figures.double_effects.values())
    assert figures.dead_letters["distinct"] == figures.dead_letters["expected"] == 2


def test_an_order_short_of_its_terminal_status_is_lost():
    expected, observed = a_clean_run()
    figures = figures_of(expected, replace(observed, statuses={**observed.statuses, "ord-1": "reserved"}))
    assert figures.lost == 1 and not figures.passed


def test_a_customer_never_told_counts_the_order_as_lost():
    expected, observed = a_clean_run()
    figures = figures_of(expected, replace(observed, notifications=observed.notifications[:-1]))
    assert figures.lost == 1


def test_a_second_decision_with_a_new_id_is_a_double_effect_but_a_record_read_twice_is_not():
    expected, observed = a_clean_run()
    read_twice = replace(observed, wire=observed.wire + [observed.wire[0]])
    assert figures_of(expected, read_twice).passed and figures_of(expected, read_twice).wire_duplicates == 1
    decided_again = replace(observed, wire=observed.wire + [WireEvent("payments.authorized.v1", 0, 9, "ord-1", "pay-1-again")])
    assert figures_of(expected, decided_again).double_effects["decisions"] == 1


def test_charges_stock_and_notifications_done_twice_are_counted():
    expected, observed = a_clean_run()
    doubled = replace(observed, ledger=observed.ledger + ["ord-1", "ord-2"], stock={"SKU-A": 5},
                      notifications=observed.notifications + [("ord-2", "payment_declined")], feed=observed.feed + ["ntf-2d"])
    assert figures_of(expected, doubled).double_effects == {
        "decisions": 0, "charges": 2, "stock_units": 2, "notifications": 1, "mail_feed_lines": 1}


def test_a_decision_the_rules_forbid_is_a_wrong_outcome():
    expected, observed = a_clean_run()
    figures = figures_of(expected, replace(observed, wire=observed.wire + [WireEvent("payments.authorized.v1", 1, 5, "ord-2", "pay-2")]))
    assert figures.wrong_outcome == 1


def test_a_receipt_handled_before_an_earlier_one_of_its_key_is_an_inversion_unless_it_was_retried():
    expected, observed = a_clean_run()
    swapped = replace(observed, stock_handled=["rcpt-0", "rcpt-2", "rcpt-1"])
    assert figures_of(expected, swapped).inversions == 1
    assert figures_of(expected, replace(swapped, retried={"rcpt-1"})).inversions == 0


def test_dead_letters_must_be_exactly_the_poison_once_per_group_with_its_reason():
    expected, observed = a_clean_run()
    missing = figures_of(expected, replace(observed, dead_letters=observed.dead_letters[:1]))
    assert missing.dead_letters["missing"] == 1 and not missing.passed
    extra = figures_of(expected, replace(observed, dead_letters=observed.dead_letters + [("orders.placed.v1", 0, 3, "payments", "retries_exhausted")]))
    assert extra.dead_letters["unexpected"] == 1 and not extra.passed
    wrong = figures_of(expected, replace(observed, dead_letters=[(*observed.dead_letters[0][:4], "stale"), observed.dead_letters[1]]))
    assert wrong.dead_letters["wrong_reason"] == 1 and not wrong.passed
    again = figures_of(expected, replace(observed, dead_letters=observed.dead_letters * 2))
    assert again.passed and again.dead_letters["records"] == 4
