"""FLEET_KAFKA_STATIC_MEMBERSHIP=true gives each consumer group_instance_id=<group>-<replica id> (KIP-345); off by default."""

import pytest

from fleet.runtime.settings import KafkaSettings
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments


def _instance_ids(broker) -> dict[str, str | None]:
    return {s.group_id: s._connection_args.get("group_instance_id") for s in broker.subscribers}


def test_off_by_default_every_consumer_is_a_dynamic_member(monkeypatch):
    monkeypatch.delenv("FLEET_KAFKA_STATIC_MEMBERSHIP", raising=False)
    broker = create_payments(PaymentsSettings()).broker
    assert set(_instance_ids(broker).values()) == {None}


def test_on_each_group_gets_an_instance_id_of_its_replica(monkeypatch):
    monkeypatch.setenv("FLEET_KAFKA_STATIC_MEMBERSHIP", "true")
    monkeypatch.setenv("FLEET_REPLICA_ID", "payments-2")
    broker = create_payments(PaymentsSettings()).broker
    ids = _instance_ids(broker)
    assert ids["payments"] == "payments-payments-2"
    assert ids["payments.retry.1"] == "payments.retry.1-payments-2"
    assert len(set(ids.values())) == len(ids)  # one instance id per consumer: they never fence each other
    in_groups = [s for s in broker.subscribers if s.group_id]  # the control subscriber reads without a group
    assert {s._connection_args.get("session_timeout_ms") for s in in_groups} == {KafkaSettings().session_timeout_ms}


def test_on_without_a_replica_id_the_worker_refuses_to_build(monkeypatch):
    monkeypatch.setenv("FLEET_KAFKA_STATIC_MEMBERSHIP", "true")
    monkeypatch.delenv("FLEET_REPLICA_ID", raising=False)
    with pytest.raises(RuntimeError, match="FLEET_REPLICA_ID"):
        create_payments(PaymentsSettings())
