"""The registry binds exactly one event type to each topic, names topics `<domain>.<event>.v<N>`, and keys by order id."""

import pytest

from contracts import REGISTRY, Event, OrderPlaced, PaymentAuthorized, Registry, RegistryError, Topic, UnknownTopic, UnregisteredEvent
from tests.support import an_order


def test_the_topics_of_the_order_flow_are_registered():
    assert {t.name for t in REGISTRY} == {
        "orders.placed.v1", "payments.authorized.v1", "payments.declined.v1", "notifications.sent.v1",
        "warehouse.stock_received.v1", "inventory.reserved.v1", "inventory.backordered.v1", "shipments.scheduled.v1",
        "fleet.control.v1", "orders.placed.v2",
    }


def test_every_topic_of_an_order_is_keyed_by_the_order_id_and_stock_by_its_sku():
    assert {t.name: t.key_field for t in REGISTRY if t.key_field != "order_id"} == {
        "warehouse.stock_received.v1": "sku", "fleet.control.v1": "service"}


def test_a_topic_is_found_by_its_event_type_and_by_its_name():
    assert REGISTRY.of(OrderPlaced) is REGISTRY.named("orders.placed.v1")
    assert REGISTRY.of(an_order()).model is OrderPlaced


def test_an_unknown_topic_name_is_a_clear_error_listing_the_known_ones():
    with pytest.raises(UnknownTopic, match="orders.placed.v1"):
        REGISTRY.named("orders.placed")


def test_an_event_type_without_a_topic_is_a_clear_error():
    class SomethingHappened(Event):
        pass

    with pytest.raises(UnregisteredEvent, match="SomethingHappened"):
        REGISTRY.of(SomethingHappened)


def test_two_topics_for_one_event_type_are_refused():
    with pytest.raises(RegistryError, match="exactly one type per topic"):
        Registry([
            Topic("orders.placed.v1", OrderPlaced, "order_id", "storefront", "a"),
            Topic("orders.placed.v2", OrderPlaced, "order_id", "storefront", "b"),
        ])


@pytest.mark.parametrize("name", ["orders.placed", "Orders.placed.v1", "orders.placed.v0", "orders-placed.v1", "a.b.c.v1"])
def test_a_badly_named_topic_is_refused(name):
    with pytest.raises(RegistryError, match="<domain>.<event>.v<N>"):
        Registry([Topic(name, OrderPlaced, "order_id", "storefront", "a")])


def test_a_key_field_that_the_model_lacks_is_refused():
    with pytest.raises(RegistryError, match="key field"):
        Registry([Topic("payments.authorized.v1", PaymentAuthorized, "sku", "payments", "a")])


def test_the_key_of_an_event_is_its_key_field_as_text():
    order = an_order(order_id="ord-42")
    assert REGISTRY.of(order).key_of(order) == "ord-42"


def test_each_topic_names_its_type_and_schema_after_itself():
    topic = REGISTRY.named("payments.declined.v1")
    assert topic.type_name == "dev.eventfleet.payments.declined.v1"
    assert topic.schema_id == "urn:eventfleet:schema:payments.declined.v1"


def test_topics_are_stamped_by_the_broker_on_arrival():
    assert all(t.configs["message.timestamp.type"] == "LogAppendTime" for t in REGISTRY)


def test_no_code_outside_the_registry_spells_a_topic_name():
    """A field's `examples=` may show one, for the AsyncAPI reader; no code may use one."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    names = [t.name for t in REGISTRY]

    def code_of(path):
        return "\n".join(line for line in path.read_text().splitlines() if "examples=" not in line)

    offenders = [
        str(path.relative_to(root))
        for folder in ("fleet", "services", "contracts")
        for path in (root / folder).rglob("*.py")
        if path.name != "registry.py" and any(f'"{n}"' in code_of(path) or f"'{n}'" in code_of(path) for n in names)
    ]
    assert offenders == []


def test_retry_and_dead_letter_topics_resolve_to_the_topic_they_serve():
    orders = REGISTRY.named("orders.placed.v1")
    assert orders.retry_topics == ("orders.placed.v1.retry.1", "orders.placed.v1.retry.2", "orders.placed.v1.retry.3")
    for name in (*orders.retry_topics, orders.dead_letter_topic, orders.name):
        assert REGISTRY.resolve(name) is orders


@pytest.mark.parametrize("name", ["orders.placed.v1.retry.4", "orders.placed.v1.retry.0", "orders.placed.v3.dlq", "orders.placed.v1.x"])
def test_a_name_that_is_not_derived_from_a_registry_topic_does_not_resolve(name):
    with pytest.raises(UnknownTopic):
        REGISTRY.resolve(name)


def test_each_topic_names_the_services_that_consume_it():
    assert [t.name for t in REGISTRY.consumed_by("notifications")] == [
        "orders.placed.v1", "payments.authorized.v1", "payments.declined.v1", "inventory.backordered.v1", "shipments.scheduled.v1",
        "fleet.control.v1", "orders.placed.v2",
    ]
    assert [t.name for t in REGISTRY.consumed_by("payments")] == ["orders.placed.v1", "fleet.control.v1", "orders.placed.v2"]
    assert [t.name for t in REGISTRY.consumed_in_group_by("payments")] == ["orders.placed.v1", "orders.placed.v2"]
