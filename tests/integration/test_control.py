"""Operators steer running workers through fleet.control.v1 on the real broker: a paused service handles nothing while
the others go on, keeps its group and partitions, and resumes where it stopped; a forged command changes nothing."""

import asyncio
from collections import Counter
from datetime import UTC, datetime

from contracts import REGISTRY, ControlIssued, OrderPlaced, PaymentAuthorized, PaymentDeclined
from fleet.ops.control import issue
from fleet.ops.groups import describe_groups
from fleet.ops.status import gather
from fleet.runtime.keys import OPERATOR_SIGNER, KeyStore, keyring_path
from fleet.runtime.settings import KafkaSettings
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from services.tracker import TrackerSettings
from services.tracker import create_app as create_tracker
from tests.support import (
    RunningApps,
    TopicReader,
    a_record,
    an_order,
    as_raw,
    committed_offsets,
    end_offsets,
    eventually,
    produce_raw,
    signer_of,
    start_group_at_end,
    wait_until_committed,
)
from tests.support.waiting import NotYet

ORDERS = REGISTRY.of(OrderPlaced).name
CONTROL = REGISTRY.of(ControlIssued)
OUTCOMES = (PaymentAuthorized, PaymentDeclined)


def _payments(kafka, group_id, tmp_path):
    return create_payments(PaymentsSettings(group_id=group_id, store_url=f"sqlite:///{tmp_path}/payments.db",
                                            kafka=KafkaSettings(bootstrap_servers=kafka)))


async def _command(kafka, command, group, **fields):
    return await issue(kafka, signer_of(OPERATOR_SIGNER), "payments", command, group=group, reason="test", **fields)


async def _lag(kafka, group) -> int:
    ends = await end_offsets(kafka, [ORDERS])
    committed = await committed_offsets(kafka, group, list(ends))
    return sum(end - max(committed.get(tp, 0), 0) for tp, end in ends.items())


def _keyring():
    import os
    from pathlib import Path

    return KeyStore(keyring_path(Path(os.environ["FLEET_KEYS_DIR"]))).keyring()


async def test_a_paused_service_handles_nothing_keeps_its_partitions_and_resumes_where_it_stopped_while_others_go_on(
    kafka, group_id, tmp_path
):
    pay, track = f"{group_id}-pay", f"{group_id}-trk"
    await start_group_at_end(kafka, pay, [OrderPlaced])
    tracker_models = [t.model for t in REGISTRY.consumed_in_group_by("tracker")]
    await start_group_at_end(kafka, track, tracker_models)
    payments = _payments(kafka, pay, tmp_path)
    tracker = create_tracker(TrackerSettings(group_id=track, store_url=f"sqlite:///{tmp_path}/tracker.db",
                                             kafka=KafkaSettings(bootstrap_servers=kafka)))
    before = [a_record(an_order()) for _ in range(10)]
    during = [a_record(an_order()) for _ in range(40)]
    async with RunningApps(payments, tracker) as apps, TopicReader(kafka, OUTCOMES) as reader:
        await produce_raw(kafka, [as_raw(r) for r in before])
        await reader.wait_for_keys([r.key for r in before])
        await wait_until_committed(kafka, pay, await end_offsets(kafka, [ORDERS]), timeout_s=30)
        owned = apps.assignments(payments)
        members = (await describe_groups(kafka, [pay]))[pay].members

        await _command(kafka, "pause", pay)
        await eventually(lambda: payments.broker.hold.held.is_paused or NotYet("not paused"), "payments to hear the pause")
        lag_before = await _lag(kafka, pay)
        committed = await committed_offsets(kafka, pay)
        await produce_raw(kafka, [as_raw(r) for r in during])
        # The tracker, another service on the same topic, goes on and folds every order.
        await wait_until_committed(kafka, track, await end_offsets(kafka, [ORDERS]), timeout_s=30)
        status = await gather(kafka, ["payments"], groups={"payments": pay}, keyring=_keyring(), dead_letters=False)
        await asyncio.sleep(8)  # several heartbeats and fetch waits: a paused replica must not lose its group meanwhile
        # Other tests may publish orders too: the paused group's own offsets and outcomes are what must not move.
        assert await committed_offsets(kafka, pay) == committed, "the paused service committed nothing"
        assert await _lag(kafka, pay) >= lag_before + len(during), "its lag grew by every order published meanwhile"
        assert status.services["payments"].held.is_paused, "fleet status reads the pause"
        assert apps.assignments(payments) == owned, "it keeps its partitions"
        still = (await describe_groups(kafka, [pay]))[pay]
        assert [m.member_id for m in still.members] == [m.member_id for m in members], "no rebalance: same member"

        await _command(kafka, "resume", pay)
        await reader.wait_for_keys([r.key for r in during], timeout_s=60)
        await wait_until_committed(kafka, pay, await end_offsets(kafka, [ORDERS]), timeout_s=30)
    outcomes = Counter(s.key for s in reader.seen if s.key in {r.key for r in before + during})
    assert set(outcomes) == {r.key for r in before + during}, "lost 0"
    assert set(outcomes.values()) == {1}, "double effects 0: one outcome per order"
    assert not payments.broker.hold.held.is_paused


async def test_a_replica_that_starts_while_its_service_is_paused_starts_paused(kafka, group_id, tmp_path):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    await _command(kafka, "pause", group_id)
    orders = [a_record(an_order()) for _ in range(5)]
    await produce_raw(kafka, [as_raw(r) for r in orders])
    committed = await committed_offsets(kafka, group_id)
    payments = _payments(kafka, group_id, tmp_path)
    async with RunningApps(payments), TopicReader(kafka, OUTCOMES) as reader:
        await eventually(lambda: payments.broker.hold.live or NotYet("reading"), "the control topic to be read")
        await asyncio.sleep(6)  # more than a poll's wait: a replica that were not paused would have handled them
        assert payments.broker.hold.held.is_paused
        assert await committed_offsets(kafka, group_id) == committed, "it started paused: nothing handled"
        await _command(kafka, "resume", group_id)
        await reader.wait_for_keys([r.key for r in orders], timeout_s=60)


async def test_a_forged_or_unsigned_control_record_is_dead_lettered_with_its_reason_and_changes_nothing(
    kafka, group_id, tmp_path
):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    payments = _payments(kafka, group_id, tmp_path)
    pause = ControlIssued(service="payments", command="pause", group=group_id, issued_by="mallory",
                          issued_at=datetime.now(UTC))
    forged = a_record(pause, service="storefront")  # a real key, but not one that may sign the control topic
    topic, key, value, headers = as_raw(forged)
    unsigned = (topic, key, value, [(k, v) for k, v in headers if k != "ce_signature"])
    order = a_record(an_order())
    async with RunningApps(payments), TopicReader(kafka, OUTCOMES, raw_topics=[CONTROL.dead_letter_topic]) as reader:
        await eventually(lambda: payments.broker.hold.live or NotYet("reading"), "the control topic to be read")
        await produce_raw(kafka, [as_raw(forged), unsigned])

        def two_dead_letters(seen):
            ours = [s for s in seen if s.topic == CONTROL.dead_letter_topic and s.headers.get("dlq-group") == "payments.control"
                    and s.headers.get("ce_id") == forged.envelope.id]
            return ours if len(ours) >= 2 else None

        await reader.wait_for(two_dead_letters)
        dead = two_dead_letters(reader.seen)
        await produce_raw(kafka, [as_raw(order)])
        await reader.wait_for_keys([order.key], timeout_s=60)
    assert {s.headers["dlq-reason"] for s in dead} == {"key_not_allowed", "missing_header"}, [s.headers for s in dead]
    assert all(s.headers["dlq-original-topic"] == CONTROL.name for s in dead)
    assert not payments.broker.hold.held.is_paused, "the forged pause changed nothing: the order was handled"
