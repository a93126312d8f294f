"""Topic provisioning from the registry: a pure plan of what differs, then applying it with Kafka's admin API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from contracts import REGISTRY, Registry
from contracts.connection import KafkaConnection, client_options
from fleet.runtime.topology import (
    TopicSpec,
    default_min_insync_replicas,
    desired_topics,
)

__all__ = [
    "Change",
    "ExistingTopic",
    "TopicSpec",
    "apply_topics",
    "default_min_insync_replicas",
    "desired_topics",
    "partitions_of",
    "plan_topics",
]


@dataclass(frozen=True)
class ExistingTopic:
    """What the broker has for a topic."""

    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One thing `topics apply` does (or would do) to one topic.

    `action` is create, add_partitions, set_configs, unchanged or warn."""

    topic: str
    action: str
    detail: str
    desired: TopicSpec

    def __str__(self) -> str:
        return f"{self.topic}: {self.action} ({self.detail})" if self.detail else f"{self.topic}: {self.action}"


def plan_topics(desired: Iterable[TopicSpec], existing: Mapping[str, ExistingTopic]) -> list[Change]:
    """What must change so the broker matches the registry.

    Kafka cannot remove partitions: a registry that asks for fewer than a topic has gets only a warning."""
    changes: list[Change] = []
    for topic in desired:
        have = existing.get(topic.name)
        if have is None:
            changes.append(Change(topic.name, "create", f"{topic.partitions} partitions", topic))
            continue
        before = len(changes)
        if have.partitions < topic.partitions:
            changes.append(Change(topic.name, "add_partitions", f"{have.partitions} → {topic.partitions}", topic))
        elif have.partitions > topic.partitions:
            changes.append(
                Change(
                    topic.name,
                    "warn",
                    f"has {have.partitions} partitions, registry says {topic.partitions}; Kafka cannot shrink a topic",
                    topic,
                )
            )
        drift = {k: v for k, v in topic.configs.items() if have.configs.get(k) != v}
        if drift:
            detail = ", ".join(f"{k}: {have.configs.get(k)} → {v}" for k, v in sorted(drift.items()))
            changes.append(Change(topic.name, "set_configs", detail, topic))
        if len(changes) == before:
            changes.append(Change(topic.name, "unchanged", "", topic))
    return changes


async def apply_topics(
    bootstrap_servers: str | KafkaConnection,
    *,
    registry: Registry = REGISTRY,
    replication_factor: int = 1,
    dry_run: bool = False,
    min_insync_replicas: int | None = None,
) -> list[Change]:
    """Creates or updates every registry topic; idempotent, and returns what it changed (or would, with dry_run).
    `min_insync_replicas` defaults to `default_min_insync_replicas(replication_factor)`."""
    admin = AIOKafkaAdminClient(**client_options(bootstrap_servers), client_id="fleet-topics")
    await admin.start()
    try:
        insync = min_insync_replicas or default_min_insync_replicas(replication_factor)
        desired = desired_topics(registry, min_insync_replicas=insync)
        changes = plan_topics(desired, await _existing(admin, [t.name for t in desired]))
        if not dry_run:
            await _carry_out(admin, changes, replication_factor)
        return changes
    finally:
        await admin.close()


async def partitions_of(bootstrap_servers: str | KafkaConnection, names: list[str]) -> dict[str, int]:
    """How many partitions each named topic has on the broker (topics it lacks are left out)."""
    admin = AIOKafkaAdminClient(**client_options(bootstrap_servers), client_id="fleet-topics")
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names) if t["partitions"]}
    finally:
        await admin.close()


async def _existing(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, ExistingTopic]:
    present = set(await admin.list_topics()) & set(names)
    if not present:
        return {}
    partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(sorted(present))}
    configs: dict[str, dict[str, str]] = {name: {} for name in present}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in sorted(present)]
    for response in await admin.describe_configs(resources):
        for _code, _msg, _type, name, entries in response.resources:
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return {name: ExistingTopic(partitions[name], configs[name]) for name in present}


async def _carry_out(admin: AIOKafkaAdminClient, changes: list[Change], replication_factor: int) -> None:
    to_create = [c.desired for c in changes if c.action == "create"]
    if to_create:
        response = await admin.create_topics(
            [NewTopic(t.name, t.partitions, replication_factor, topic_configs=t.configs) for t in to_create]
        )
        _raise_errors(response.topic_errors)
    grow = {c.topic: NewPartitions(c.desired.partitions) for c in changes if c.action == "add_partitions"}
    if grow:
        await admin.create_partitions(grow)
    reconfigure = [c.desired for c in changes if c.action == "set_configs"]
    if reconfigure:
        # AlterConfigs replaces a topic's overrides: the registry's set is the whole set we manage.
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t.name, t.configs) for t in reconfigure])


def _raise_errors(topic_errors) -> None:
    for error in topic_errors:
        name, code = error[0], error[1]
        if code and for_code(code).__name__ != "TopicAlreadyExistsError":
            raise for_code(code)(f"could not create {name}: {error[-1]}")
