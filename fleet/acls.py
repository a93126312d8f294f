"""Per-service Kafka ACLs, derived from the registry and each service's real wiring: exactly what a service needs, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from contracts import REGISTRY, Registry

from .governance import Wiring

__all__ = ["Acl", "fleet_acls", "service_acls"]

CLUSTER = "kafka-cluster"


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
    idempotent writes (every producer of the fleet is idempotent). No service uses transactions, so no TransactionalId."""
    principal = f"User:{service}"
    acls = {Acl(principal, "CLUSTER", CLUSTER, "IDEMPOTENT_WRITE")}
    for name in wiring.subscribes:
        acls |= {Acl(principal, "TOPIC", name, op) for op in ("READ", "DESCRIBE")}
        topic = registry.resolve(name)
        for derived in (*topic.retry_topics, topic.dead_letter_topic):
            acls |= {Acl(principal, "TOPIC", derived, op) for op in ("WRITE", "DESCRIBE")}
    for name in wiring.publishes:
        acls |= {Acl(principal, "TOPIC", name, op) for op in ("WRITE", "DESCRIBE")}
    acls |= {Acl(principal, "GROUP", group, "READ") for group in wiring.groups}
    return acls


def fleet_acls(wiring: Mapping[str, Wiring], registry: Registry = REGISTRY, services: Iterable[str] | None = None) -> list[Acl]:
    """Every service's ACLs, sorted: what `fleet acl plan` prints."""
    names = list(services) if services is not None else sorted(wiring)
    return sorted(acl for service in names for acl in service_acls(service, wiring[service], registry))
