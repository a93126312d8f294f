"""`fleet topics apply` plans from the registry: create what is missing, grow partitions, fix configs, never shrink."""

from contracts import REGISTRY
from fleet.ops.topics import ExistingTopic, plan_topics

ORDERS = REGISTRY.named("orders.placed.v1")


def _as_is(topic, **overrides):
    return ExistingTopic(overrides.get("partitions", topic.partitions), overrides.get("configs", dict(topic.configs)))


def test_a_missing_topic_is_created_with_its_partitions():
    [change] = plan_topics([ORDERS], {})
    assert (change.action, change.detail) == ("create", "6 partitions")


def test_a_topic_that_matches_is_left_unchanged():
    assert [c.action for c in plan_topics(REGISTRY, {t.name: _as_is(t) for t in REGISTRY})] == ["unchanged"] * len(REGISTRY)


def test_too_few_partitions_are_grown():
    [change] = plan_topics([ORDERS], {ORDERS.name: _as_is(ORDERS, partitions=3)})
    assert (change.action, change.detail) == ("add_partitions", "3 → 6")


def test_too_many_partitions_is_only_a_warning_because_kafka_cannot_shrink():
    [change] = plan_topics([ORDERS], {ORDERS.name: _as_is(ORDERS, partitions=12)})
    assert change.action == "warn" and "cannot shrink" in change.detail


def test_a_drifted_config_is_set_back_and_the_diff_is_shown():
    configs = dict(ORDERS.configs) | {"message.timestamp.type": "CreateTime"}
    [change] = plan_topics([ORDERS], {ORDERS.name: _as_is(ORDERS, configs=configs)})
    assert change.action == "set_configs"
    assert "message.timestamp.type: CreateTime → LogAppendTime" in change.detail


def test_every_topic_gets_a_dead_letter_topic_with_the_same_partitions_and_a_longer_retention():
    from fleet.ops.topics import desired_topics

    specs = {s.name: s for s in desired_topics()}
    for topic in REGISTRY:
        dead = specs[topic.dead_letter_topic]
        assert dead.partitions == topic.partitions
        assert int(dead.configs["retention.ms"]) > topic.retention_ms
