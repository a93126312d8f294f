"""A retired topic (`fleet contracts retire`, contracts/lifecycle.json) stays in the registry for its history, and nothing
writes or reads it: the Publisher refuses it, `fleet check` wants no service on it, and the ACL plan grants nothing on
it."""

import pytest

from contracts import OrderPlaced, OrderPlacedV2, PaymentAuthorized, PrivateKey, Registry, Topic
from contracts.publisher import Publisher
from contracts.registry import REGISTRY, TOPICS, RetiredTopic, lifecycle, with_lifecycle
from fleet.catalog import Wiring
from fleet.cli.errors import ExitCode, as_cli_error
from fleet.docs.governance import wiring_problems
from fleet.ops.acls import fleet_acls, gateway_acls, service_acls, upstream_acls
from tests.support import an_order, an_order_v2

V1 = Topic("orders.placed.v1", OrderPlaced, "order_id", "storefront", "Orders.", consumers=("payments",))
V2 = Topic("orders.placed.v2", OrderPlacedV2, "order_id", "storefront", "Orders.", consumers=("payments",))
PAID = Topic("payments.authorized.v1", PaymentAuthorized, "order_id", "payments", "Paid.")
RETIRED = Registry(with_lifecycle([V1, V2, PAID], {"retired": {"orders.placed.v1": "2026-12-07"}}))


def found(problems) -> list[tuple[str, str, str]]:
    return sorted((p.topic, p.field, p.rule) for p in problems)


def test_the_registry_retires_exactly_the_topics_the_committed_lifecycle_names():
    retired = lifecycle()["retired"]
    assert {t.name: t.retired_on for t in REGISTRY if t.retired} == retired
    assert set(retired) <= {t.name for t in REGISTRY}


def test_the_lifecycle_marks_a_retired_topic_with_its_day_and_the_registry_keeps_it():
    topic = RETIRED.named("orders.placed.v1")
    assert topic.retired and topic.retired_on == "2026-12-07"
    assert RETIRED.current(topic) is RETIRED.named("orders.placed.v2") and RETIRED.is_superseded(topic)
    assert not RETIRED.named("orders.placed.v2").retired
    assert [t.name for t in with_lifecycle(TOPICS, {"retired": {}})] == [t.name for t in TOPICS]


def test_writing_a_retired_topic_is_refused_naming_the_day_and_the_version_to_publish_instead():
    with pytest.raises(RetiredTopic, match=r"orders\.placed\.v1 is retired \(since 2026-12-07.*publish orders\.placed\.v2"):
        RETIRED.for_writing(OrderPlaced)
    assert RETIRED.for_writing(OrderPlacedV2).name == "orders.placed.v2"


async def test_the_publisher_refuses_an_event_of_a_retired_topic_before_it_signs_anything():
    publisher = Publisher("127.0.0.1:9", service="storefront", signer=PrivateKey.generate("storefront-test"), registry=RETIRED)
    with pytest.raises(RetiredTopic, match="orders.placed.v1 is retired"):
        publisher.record(an_order())
    assert publisher.record(an_order_v2(channel="phone")).topic == "orders.placed.v2"


def test_fleet_says_a_retired_topic_in_one_line_and_exits_64():
    error = as_cli_error(RetiredTopic("orders.placed.v1 is retired (since 2026-12-07): publish orders.placed.v2 instead"))
    assert error is not None and error.code == ExitCode.BAD_INPUT and "\n" not in error.message


def test_no_service_need_read_or_write_a_retired_topic():
    wiring = {"payments": Wiring(frozenset({"orders.placed.v2"}), frozenset({"payments.authorized.v1"}))}
    assert wiring_problems(RETIRED, wiring) == []


def test_a_service_still_reading_or_writing_a_retired_topic_fails_the_check():
    wiring = {"payments": Wiring(frozenset({"orders.placed.v2", "orders.placed.v1"}),
                                 frozenset({"payments.authorized.v1", "orders.placed.v1"}))}
    problems = wiring_problems(RETIRED, wiring)
    assert found(problems) == [("orders.placed.v1", "service payments", "reads-retired"),
                               ("orders.placed.v1", "service payments", "writes-retired")]
    assert "OrderPlacedV2" in problems[0].fix


def test_the_acl_plan_lets_nobody_write_or_read_a_retired_topic():
    writes = {(a.principal, a.resource) for a in upstream_acls("storefront", RETIRED) | gateway_acls(RETIRED) if a.operation == "WRITE"}
    assert writes == {("User:storefront", "orders.placed.v2"), ("User:gateway", "orders.placed.v2")}
    payments = service_acls("payments", Wiring(frozenset({"orders.placed.v1", "orders.placed.v1.retry.1", "orders.placed.v2"}),
                                               frozenset({"payments.authorized.v1"})), RETIRED)
    assert not [a for a in payments if a.resource.startswith("orders.placed.v1")]


def test_before_retirement_the_plan_still_lets_the_storefront_and_the_gateway_write_the_old_version():
    live = Registry([V1, V2, PAID])
    acls = fleet_acls({}, live, ["storefront", "gateway"])
    assert {(a.principal, a.resource) for a in acls if a.operation == "WRITE"} >= {
        ("User:storefront", "orders.placed.v1"), ("User:gateway", "orders.placed.v1")}


# ---- closed for writing (`fleet contracts close`): read until drained, written by nobody -----------------------------

CLOSED = Registry(with_lifecycle([V1, V2, PAID], {"closed": {"orders.placed.v1": "2026-12-06"}}))


def test_the_lifecycle_marks_a_closed_topic_and_a_retired_one_is_closed_since_it_was_closed():
    closed = CLOSED.named("orders.placed.v1")
    assert closed.closed and closed.closed_on == "2026-12-06" and not closed.retired
    both = with_lifecycle([V1], {"closed": {"orders.placed.v1": "2026-12-06"}, "retired": {"orders.placed.v1": "2026-12-07"}})
    assert (both[0].closed_on, both[0].retired_on) == ("2026-12-06", "2026-12-07")
    assert RETIRED.named("orders.placed.v1").closed and RETIRED.named("orders.placed.v1").closed_on == "2026-12-07"


def test_writing_a_closed_topic_is_refused_too():
    with pytest.raises(RetiredTopic, match=r"orders\.placed\.v1 is closed \(since 2026-12-06\).*publish orders\.placed\.v2"):
        CLOSED.for_writing(OrderPlaced)


def test_a_closed_topic_is_still_read_by_its_consumers_but_written_by_nobody_in_the_acl_plan():
    writes = {(a.principal, a.resource) for a in upstream_acls("storefront", CLOSED) | gateway_acls(CLOSED) if a.operation == "WRITE"}
    assert writes == {("User:storefront", "orders.placed.v2"), ("User:gateway", "orders.placed.v2")}
    payments = service_acls("payments", Wiring(frozenset({"orders.placed.v1", "orders.placed.v2"}), frozenset()), CLOSED)
    allowed = {(a.resource, a.operation) for a in payments}
    assert {("orders.placed.v1", "READ"), ("orders.placed.v1.retry.1", "WRITE"), ("orders.placed.v1.dlq", "WRITE")} <= allowed
    assert ("orders.placed.v1", "WRITE") not in allowed


def test_a_closed_topic_s_consumers_still_subscribe_and_a_service_writing_it_fails_the_check():
    wiring = {"payments": Wiring(frozenset({"orders.placed.v2"}), frozenset({"payments.authorized.v1", "orders.placed.v1"}))}
    assert found(wiring_problems(CLOSED, wiring)) == [("orders.placed.v1", "consumer payments", "missing-subscription"),
                                                      ("orders.placed.v1", "service payments", "writes-closed")]
