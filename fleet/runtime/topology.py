"""What each registry topic, its retry topics and its dead-letter topic look like on the broker (pure): partitions and
configs. `fleet topics apply` makes the broker match; the AsyncAPI document describes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from contracts import REGISTRY, Registry

__all__ = ["DEAD_LETTER_RETENTION_MS", "TopicSpec", "default_min_insync_replicas", "desired_topics"]

DEAD_LETTER_RETENTION_MS = 30 * 24 * 3600 * 1000  # long enough for an operator to look, fix and replay


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the broker should have it."""

    name: str
    partitions: int
    configs: Mapping[str, str]


def default_min_insync_replicas(replication_factor: int) -> int:
    """One replica may be down without stopping acks=all publishes: RF 3 → 2; a single local broker → 1."""
    return max(1, replication_factor - 1)


def desired_topics(registry: Registry = REGISTRY, *, min_insync_replicas: int | None = None) -> list[TopicSpec]:
    """Every registry topic, and beside each its retry topics and its dead-letter topic (same partitions, so per-key
    order survives there too). `min_insync_replicas` (acks=all waits for that many replicas) depends on the cluster's
    replication factor, not on the registry: `apply_topics` always sets it; None (the AsyncAPI document) leaves it out.
    """
    specs = []
    for topic in registry:
        insync = {} if min_insync_replicas is None else {"min.insync.replicas": str(min_insync_replicas)}
        configs = dict(topic.configs) | insync
        specs.append(TopicSpec(topic.name, topic.partitions, configs))
        specs.extend(TopicSpec(name, topic.partitions, configs) for name in topic.retry_topics)
        specs.append(
            TopicSpec(
                topic.dead_letter_topic, topic.partitions, configs | {"retention.ms": str(DEAD_LETTER_RETENTION_MS)}
            )
        )
    return specs
