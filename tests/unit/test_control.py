"""The operators' commands fold into a service's standing orders: pure, one record at a time, the same in every replica
and in `fleet status`."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from contracts import REGISTRY, ControlIssued, PartitionOffset
from fleet.runtime.control import ALL_TOPICS, Held, fold, held_topic

ORDERS = "orders.placed.v1"
AT = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def command(command: str, service: str = "payments", **fields) -> ControlIssued:
    return ControlIssued(service=service, command=command, issued_by="alice", issued_at=AT, **fields)


def folded(*commands: ControlIssued, service: str = "payments") -> Held:
    held = Held(service)
    for number, event in enumerate(commands):
        held, _ = fold(held, f"id-{number}", event)
    return held


def test_a_pause_without_topics_holds_every_topic_the_service_reads_and_says_who_and_why():
    held = folded(command("pause", reason="database down"))
    assert held.is_paused and held.pauses(ORDERS) and held.pauses("anything.else.v1")
    assert (held.paused_by, held.reason, held.paused_at, held.what) == ("alice", "database down", AT, "every topic")


def test_a_resume_without_topics_lifts_everything():
    assert not folded(command("pause"), command("resume")).is_paused
    assert not folded(command("pause", topics=(ORDERS,)), command("resume")).is_paused


def test_a_pause_of_one_topic_holds_that_topic_only_and_its_resume_lifts_only_it():
    held = folded(command("pause", topics=(ORDERS,)))
    assert held.pauses(ORDERS) and not held.pauses("payments.authorized.v1")
    both = folded(command("pause", topics=(ORDERS,)), command("pause", topics=("payments.authorized.v1",)))
    after = fold(both, "id-9", command("resume", topics=(ORDERS,)))[0]
    assert not after.pauses(ORDERS) and after.pauses("payments.authorized.v1")


def test_a_command_for_another_service_changes_nothing():
    held = Held("payments")
    assert fold(held, "id-1", command("pause", service="inventory")) == (held, None)


def test_a_pause_for_another_group_of_the_service_changes_nothing_and_one_for_its_own_group_holds_it():
    mine = Held("payments", group="payments")
    assert fold(mine, "id-1", command("pause", group="payments-canary")) == (mine, None)
    assert fold(mine, "id-1", command("pause", group="payments"))[0].is_paused
    assert fold(mine, "id-1", command("pause"))[0].is_paused, "a pause that names no group holds every replica"


def test_the_same_command_read_twice_changes_nothing_the_second_time():
    """A copy of an old record re-appended to the topic has the same ce_id: it cannot pause a resumed service again."""
    paused, _ = fold(Held("payments"), "id-1", command("pause"))
    resumed, _ = fold(paused, "id-2", command("resume"))
    again, seek = fold(resumed, "id-1", command("pause"))
    assert again is resumed and seek is None and not again.is_paused


def test_a_seek_asks_its_group_to_move_and_holds_nothing():
    event = command("seek", group="payments", offsets=(PartitionOffset(topic=ORDERS, partition=2, offset=40),))
    held, seek = fold(Held("payments"), "id-1", event)
    assert not held.is_paused
    assert seek is not None and seek.group == "payments" and seek.offsets == {(ORDERS, 2): 40}


def test_a_seek_without_offsets_and_a_pause_with_offsets_are_invalid_commands():
    with pytest.raises(ValidationError, match="names its group and at least one offset"):
        command("seek", group="payments")
    with pytest.raises(ValidationError, match="a pause names no offsets"):
        command("pause", group="payments", offsets=(PartitionOffset(topic=ORDERS, partition=0, offset=1),))


def test_a_retry_tier_is_held_with_its_topic():
    assert held_topic(f"{ORDERS}.retry.2", REGISTRY) == ORDERS
    assert held_topic(ORDERS, REGISTRY) == ORDERS
    assert folded(command("pause", topics=(ORDERS,))).pauses(held_topic(f"{ORDERS}.retry.1", REGISTRY))


def test_the_control_topic_is_read_by_every_worker_without_a_group_and_without_retry_tiers():
    topic = REGISTRY.of(ControlIssued)
    assert topic.broadcast and topic.retry_topics == () and topic.partitions == 1
    assert topic.configs["retention.ms"] == "-1", "a replica that starts reads every command ever issued"
    assert topic not in REGISTRY.consumed_in_group_by("payments")
    assert ALL_TOPICS not in {t.name for t in REGISTRY}


def test_a_broker_on_a_registry_without_the_control_topic_builds_and_has_nothing_to_wait_for():
    """make bench's relay runs on a registry of its own: no control topic, so no control subscriber and no wait."""
    from contracts import OrderPlaced, Registry, Topic
    from fleet.runtime.broker import create_broker
    from fleet.runtime.settings import KafkaSettings

    own = Registry([Topic("relay.order_received.v1", OrderPlaced, "order_id", "relay", "Orders.")])
    broker = create_broker("relay", KafkaSettings(bootstrap_servers="127.0.0.1:1"), registry=own)
    assert broker.hold.live
    assert not [s for s in broker.subscribers if "fleet.control.v1" in s.topic_names_for_subscribe]
    fleet = create_broker("payments", KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    assert not fleet.hold.live, "a fleet worker waits until it has read the control topic"
    assert [s for s in fleet.subscribers if "fleet.control.v1" in s.topic_names_for_subscribe]
