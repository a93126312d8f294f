"""The ACLs a service gets are what its wiring needs: its inputs to read in its own groups, its outputs and the retry and
dead-letter topics of its inputs to write, and nothing of any other service."""

from contracts import REGISTRY
from fleet.ops.acls import Acl, fleet_acls, service_acls
from fleet.docs.governance import Wiring, service_wiring
from fleet.catalog import WORKERS


def _payments() -> Wiring:
    return Wiring(subscribes=frozenset({"orders.placed.v1", "orders.placed.v1.retry.1", "orders.placed.v1.retry.2", "orders.placed.v1.retry.3"}),
                  publishes=frozenset({"payments.authorized.v1", "payments.declined.v1"}),
                  groups=frozenset({"payments", "payments.retry.1", "payments.retry.2", "payments.retry.3"}))


def test_payments_reads_orders_in_its_groups_and_writes_its_outcomes_retries_and_dead_letters():
    acls = service_acls("payments", _payments())
    allowed = {(a.resource_type, a.resource, a.operation) for a in acls}
    assert ("TOPIC", "orders.placed.v1", "READ") in allowed and ("GROUP", "payments", "READ") in allowed
    assert ("TOPIC", "payments.authorized.v1", "WRITE") in allowed and ("TOPIC", "orders.placed.v1.retry.2", "WRITE") in allowed
    assert ("TOPIC", "orders.placed.v1.dlq", "WRITE") in allowed and ("CLUSTER", "kafka-cluster", "IDEMPOTENT_WRITE") in allowed
    assert ("TOPIC", "orders.placed.v1", "WRITE") not in allowed, "an input is not the service's to write"
    assert ("TOPIC", "payments.authorized.v1", "READ") not in allowed, "nor an output to read"
    assert not any(a.operation in ("ALL", "ALTER", "CREATE", "DELETE") for a in acls)
    assert {a.principal for a in acls} == {"User:payments"}


def test_every_service_touches_only_the_topics_and_groups_its_app_wires_and_the_registry_allows():
    wiring = service_wiring(WORKERS)
    acls = fleet_acls(wiring)
    for service in WORKERS:
        mine = [a for a in acls if a.principal == f"User:{service}"]
        consumed = {t.name for t in REGISTRY.consumed_by(service)}
        owned = {t.name for t in REGISTRY.owned_by(service)}
        for acl in mine:
            if acl.resource_type == "TOPIC" and acl.operation == "READ":
                assert REGISTRY.resolve(acl.resource).name in consumed, acl
            if acl.resource_type == "TOPIC" and acl.operation == "WRITE":
                base = REGISTRY.resolve(acl.resource).name
                assert base in owned or (base in consumed and acl.resource != base), acl
            if acl.resource_type == "GROUP":
                assert acl.resource == service or acl.resource.startswith(f"{service}.retry."), acl
        assert {a.resource for a in mine if a.operation == "READ" and a.resource_type == "TOPIC"} >= consumed


def test_an_acl_reads_as_a_line_an_operator_can_check():
    assert str(Acl("User:shipping", "GROUP", "shipping", "READ")).split() == ["ALLOW", "User:shipping", "READ", "GROUP:shipping"]
