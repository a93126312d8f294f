"""`fleet topics apply` sets min.insync.replicas on every topic it manages; a different value is a change --dry-run shows."""

from contracts import REGISTRY
from fleet.ops.topics import ExistingTopic, plan_topics

ORDERS = REGISTRY.named("orders.placed.v1")


def test_min_insync_replicas_is_set_on_every_topic_and_follows_the_replication_factor():
    from fleet.ops.topics import default_min_insync_replicas, desired_topics

    assert [default_min_insync_replicas(rf) for rf in (1, 2, 3, 5)] == [1, 1, 2, 4]
    specs = desired_topics(min_insync_replicas=2)
    assert specs and all(s.configs["min.insync.replicas"] == "2" for s in specs)
    assert all("min.insync.replicas" not in s.configs for s in desired_topics())  # the AsyncAPI document's view


def test_a_different_min_insync_replicas_is_a_config_change_the_dry_run_shows():
    from fleet.ops.topics import desired_topics

    [orders] = [s for s in desired_topics(min_insync_replicas=2) if s.name == ORDERS.name]
    [change] = plan_topics([orders], {orders.name: ExistingTopic(orders.partitions, dict(orders.configs) | {"min.insync.replicas": "1"})})
    assert change.action == "set_configs" and change.detail == "min.insync.replicas: 1 → 2"
