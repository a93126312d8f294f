"""Per-service Kafka ACLs, derived from the registry and each service's real wiring.

Each service gets exactly what it needs, nothing else."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IncompatibleBrokerVersion, for_code
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest

from contracts import REGISTRY, Registry, UnknownTopic
from fleet.catalog import HTTP_SERVICES, WORKERS, Wiring

if TYPE_CHECKING:
    from contracts.connection import KafkaConnection

__all__ = [
    "Acl",
    "AclPlan",
    "apply_acls",
    "fleet_acls",
    "fleet_users",
    "gateway_acls",
    "plan_acls",
    "service_acls",
    "upstream_acls",
]

CLUSTER = "kafka-cluster"
GATEWAY = "gateway"
# Kafka's codes (org.apache.kafka.common.acl and .resource): what the ACL requests carry.
RESOURCE_TYPES = {"TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5}
OPERATIONS = {
    "ALL": 2,
    "READ": 3,
    "WRITE": 4,
    "CREATE": 5,
    "DELETE": 6,
    "ALTER": 7,
    "DESCRIBE": 8,
    "CLUSTER_ACTION": 9,
    "DESCRIBE_CONFIGS": 10,
    "ALTER_CONFIGS": 11,
    "IDEMPOTENT_WRITE": 12,
}
ANY, LITERAL, ALLOW_CODE = 1, 3, 3


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW entry: a principal may do an operation on a resource (Kafka's LITERAL pattern, any host)."""

    principal: str  # User:<service>
    resource_type: str  # TOPIC, GROUP or CLUSTER
    resource: str
    operation: str  # READ, WRITE, DESCRIBE, IDEMPOTENT_WRITE

    def __str__(self) -> str:
        return f"ALLOW {self.principal:<22} {self.operation:<16} {self.resource_type}:{self.resource}"


def service_acls(service: str, wiring: Wiring, registry: Registry = REGISTRY) -> set[Acl]:
    """What one service may do: read (and describe) the topics it subscribes to, in its own groups; write (and describe)
    the topics it publishes, and the retry and dead-letter topics of what it consumes (its middleware writes them);
    idempotent writes (every producer of the fleet is idempotent). Nothing on a retired topic; no write of a topic
    closed for writing (its retry and dead-letter topics are still written while its consumers read it).

    No service uses transactions, so none gets a TransactionalId ACL."""
    principal = f"User:{service}"
    acls = {Acl(principal, "CLUSTER", CLUSTER, "IDEMPOTENT_WRITE")}
    for name in wiring.subscribes:
        topic = registry.resolve(name)
        if topic.retired:
            continue
        acls |= {Acl(principal, "TOPIC", name, op) for op in ("READ", "DESCRIBE")}
        for derived in (*topic.retry_topics, topic.dead_letter_topic):
            acls |= {Acl(principal, "TOPIC", derived, op) for op in ("WRITE", "DESCRIBE")}
    for name in wiring.publishes:
        if _closed(name, registry):
            continue
        acls |= {Acl(principal, "TOPIC", name, op) for op in ("WRITE", "DESCRIBE")}
    acls |= {Acl(principal, "GROUP", group, "READ") for group in wiring.groups}
    return acls


def _closed(name: str, registry: Registry) -> bool:
    try:
        topic = registry.named(name)
    except UnknownTopic:
        return False
    return topic.closed or topic.retired


def _writer(principal: str, topics: Iterable[str]) -> set[Acl]:
    acls = {Acl(principal, "CLUSTER", CLUSTER, "IDEMPOTENT_WRITE")}
    return acls | {Acl(principal, "TOPIC", name, op) for name in topics for op in ("WRITE", "DESCRIBE")}


def upstream_systems(registry: Registry = REGISTRY) -> tuple[str, ...]:
    """Owners of registry topics that are not fleet services (e.g. `storefront`): upstream publishers."""
    return tuple(sorted({t.owner for t in registry.topics} - set(WORKERS) - set(HTTP_SERVICES)))


def upstream_acls(system: str, registry: Registry = REGISTRY) -> set[Acl]:
    """An upstream system publishing with the contracts `Publisher` may write the topics it owns (but one closed for
    writing or retired), nothing else."""
    return _writer(f"User:{system}", (t.name for t in registry.owned_by(system) if not (t.closed or t.retired)))


def gateway_acls(registry: Registry = REGISTRY) -> set[Acl]:
    """The HTTP ingress publishes for upstream systems: it may write the topics they own, never a fleet service's, never
    the operators' commands, and never a topic closed for writing or retired."""
    return _writer(
        f"User:{GATEWAY}",
        (
            t.name
            for system in upstream_systems(registry)
            for t in registry.owned_by(system)
            if not (t.broadcast or t.closed or t.retired)
        ),
    )


def fleet_users(registry: Registry = REGISTRY) -> tuple[str, ...]:
    """Every SCRAM user the fleet needs: its workers, its HTTP services and the upstream systems."""
    return (*WORKERS, *HTTP_SERVICES, *upstream_systems(registry))


def fleet_acls(
    wiring: Mapping[str, Wiring], registry: Registry = REGISTRY, services: Iterable[str] | None = None
) -> list[Acl]:
    """Every user's ACLs, sorted: what `fleet acl plan` prints and `fleet acl apply` makes true. `services` picks some
    users (workers, `gateway` or upstream systems); the default is all of them."""
    names = list(services) if services is not None else [*sorted(wiring), GATEWAY, *upstream_systems(registry)]
    acls: set[Acl] = set()
    for name in names:
        if name in wiring:
            acls |= service_acls(name, wiring[name], registry)
        elif name == GATEWAY:
            acls |= gateway_acls(registry)
        elif name in upstream_systems(registry):
            acls |= upstream_acls(name, registry)
        else:
            raise ValueError(f"unknown user {name!r}: the fleet's users are {', '.join(fleet_users(registry))}")
    return sorted(acls)


@dataclass(frozen=True)
class AclPlan:
    """What `fleet acl apply` does: add what is missing, remove what the fleet's users have but no longer need."""

    add: tuple[Acl, ...]
    remove: tuple[Acl, ...]
    keep: tuple[Acl, ...]


def plan_acls(desired: Iterable[Acl], existing: Iterable[Acl], users: Iterable[str]) -> AclPlan:
    """Pure. Only the ACLs of `users` are ever removed: an operator's own entries for other principals stay."""
    want, have = set(desired), set(existing)
    principals = {f"User:{u}" for u in users}
    return AclPlan(
        tuple(sorted(want - have)),
        tuple(sorted(a for a in have - want if a.principal in principals)),
        tuple(sorted(want & have)),
    )


async def apply_acls(
    connection: KafkaConnection,
    desired: list[Acl],
    users: Iterable[str],
    *,
    dry_run: bool = False,
    settle_timeout_s: float = 15.0,
) -> AclPlan:
    """Reads the broker's ACLs, then creates the missing ones and deletes the fleet users' extra ones (unless dry_run).

    aiokafka has no ACL methods, but it has the protocol's DescribeAcls, CreateAcls and DeleteAcls requests."""
    admin = AIOKafkaAdminClient(**connection.aiokafka_options(), client_id="fleet-acls")
    await admin.start()
    try:
        users = tuple(users)
        plan = plan_acls(desired, await _existing_acls(admin), users)
        if not dry_run and (plan.add or plan.remove):
            if plan.add:
                _raise_errors("create", plan.add, (await admin._send_request(_CreateAcls(plan.add))).creation_responses)
            if plan.remove:
                responses = (await admin._send_request(_DeleteAcls(plan.remove))).filter_responses
                _raise_errors("delete", plan.remove, [(code, message) for code, message, _ in responses])
            await _until_visible(admin, desired, users, settle_timeout_s)
        return plan
    finally:
        await admin.close()


async def _until_visible(
    admin: AIOKafkaAdminClient, desired: list[Acl], users: tuple[str, ...], timeout_s: float
) -> None:
    """ACL changes reach the brokers' authorizers through the metadata log, a moment after the controller took them:
    return only when the broker shows them, so whoever starts a service next is not refused by a stale cache."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (left := plan_acls(desired, await _existing_acls(admin), users)).add or left.remove:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(
                f"the broker still shows {len(left.add)} missing and {len(left.remove)} extra ACL(s) "
                f"after {timeout_s:g}s"
            )
        await asyncio.sleep(0.2)


async def _existing_acls(admin: AIOKafkaAdminClient) -> set[Acl]:
    names = {code: name for name, code in RESOURCE_TYPES.items()}
    operations = {code: name for name, code in OPERATIONS.items()}
    response = await admin._send_request(DescribeAclsRequest(ANY, None, ANY, None, None, ANY, ANY))
    if response.error_code:
        raise _error(response.error_code, f"could not read the broker's ACLs: {response.error_message}")
    return {
        Acl(
            principal, names.get(resource_type, str(resource_type)), resource, operations.get(operation, str(operation))
        )
        for resource_type, resource, pattern, entries in response.resources
        if pattern == LITERAL
        for principal, host, operation, permission in entries
        if permission == ALLOW_CODE and host == "*"
    }


def _wire(acl: Acl) -> tuple:
    return (
        RESOURCE_TYPES[acl.resource_type],
        acl.resource,
        LITERAL,
        acl.principal,
        "*",
        OPERATIONS[acl.operation],
        ALLOW_CODE,
    )


def _error(code: int, message: str) -> Exception:
    return for_code(code)(message)


def _raise_errors(verb: str, acls: tuple[Acl, ...], results: list[tuple[int, str | None]]) -> None:
    failed = [f"{acl}: {message or code}" for acl, (code, message) in zip(acls, results, strict=True) if code]
    if failed:
        raise _error(
            results[0][0] if len(failed) == len(acls) else 0,
            f"could not {verb} {len(failed)} ACL(s): " + "; ".join(failed),
        )


class _AllAtOnce:
    """Mixed into aiokafka's ACL requests, which carry one ACL each: this one carries all of them in one round trip."""

    def __init__(self, acls: tuple[Acl, ...]) -> None:
        self.acls = acls

    def build(self, struct_class):
        if struct_class.API_VERSION < 1:  # v0 has no pattern type; Kafka 4 brokers speak v1 and later
            raise IncompatibleBrokerVersion(f"{type(self).__name__} v0 cannot carry a LITERAL pattern")
        return struct_class([_wire(acl) for acl in self.acls])


class _CreateAcls(_AllAtOnce, CreateAclsRequest):
    pass


class _DeleteAcls(_AllAtOnce, DeleteAclsRequest):
    pass
