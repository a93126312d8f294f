"""`fleet replay` on the real broker, with a real payments worker: a replay from a moment reads again exactly the
records appended at or after it (the worker's inbox recognises each as already decided), whether its replicas run (a
seek they apply, the service paused around it) or not (the offsets committed for them); a dry run moves nothing; a
moment in the future or older than the topic's retention is refused in one line."""

import asyncio
import os
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from structlog.testing import capture_logs

from contracts import ControlIssued, OrderPlaced
from contracts.connection import client_options
from fleet.ops.control import standing_orders
from fleet.ops.groups import group_members
from fleet.runtime.keys import KeyStore, keyring_path
from fleet.runtime.observe.logs import merge_event_context
from fleet.runtime.settings import KafkaSettings
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import (
    NotYet,
    RunningApps,
    TopicReader,
    a_record,
    an_order,
    as_raw,
    assert_fails_in_one_line,
    committed_offsets,
    eventually,
    run_fleet,
    start_group_at_end,
)

REPO = Path(__file__).resolve().parents[2]
ORDERS = "orders.placed.v1"
MOVE = re.compile(r"^(?P<topic>[\w.]+)\[(?P<partition>\d+)\]: (?P<current>\d+) → (?P<target>\d+) ", re.MULTILINE)


# ---- helpers: publishing with the broker's answer, the group's progress, the command ---------------------------------


async def publish(kafka: str, records) -> dict[str, tuple[int, int, int]]:
    """Publishes each record and returns {event id: (partition, offset, the broker's LogAppendTime in ms)}."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_options(kafka), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        appended = {}
        for record in records:
            topic, key, value, headers = as_raw(record)
            meta = await producer.send_and_wait(topic, value=value, key=key, headers=headers)
            appended[record.envelope.id] = (meta.partition, meta.offset, meta.timestamp)
        return appended
    finally:
        await producer.stop()


def firsts(appended: dict) -> dict[tuple[str, int], int]:
    """Per partition, the first offset among these records."""
    found: dict[tuple[str, int], int] = {}
    for partition, offset, _ in appended.values():
        found[(ORDERS, partition)] = min(offset, found.get((ORDERS, partition), offset))
    return found


def lasts(appended: dict) -> dict[tuple[str, int], int]:
    """Per partition, the last offset among these records."""
    found: dict[tuple[str, int], int] = {}
    for partition, offset, _ in appended.values():
        found[(ORDERS, partition)] = max(offset, found.get((ORDERS, partition), offset))
    return found


def assert_between(targets: dict, first: dict, then: dict) -> None:
    """Each partition B reached moves back to B's first record there or before it (other tests' records appended
    since the moment come first), and never to A's: past A's last record on that partition."""
    for tp, first_of_b in firsts(then).items():
        assert tp in targets, f"{tp} does not move: {targets}"
        assert lasts(first).get(tp, -1) < targets[tp] <= first_of_b, (tp, targets[tp], lasts(first).get(tp), first_of_b)


async def committed_past(kafka: str, group_id: str, appended: dict) -> dict:
    """Waits until the group has committed past every one of these records (it handled them all)."""
    wanted = lasts(appended)

    async def past():
        committed = await committed_by(kafka, group_id)
        return committed if all(committed.get(tp, -1) > last for tp, last in wanted.items()) else NotYet(committed)

    return await eventually(past, f"group {group_id} to commit past {wanted}", timeout_s=60)


async def committed_by(kafka: str, group_id: str) -> dict[tuple[str, int], int]:
    return {(tp.topic, tp.partition): o for tp, o in (await committed_offsets(kafka, group_id)).items()}


async def a_moment_between(kafka: str, group_id: str, payments_running: bool):
    """Batch A, handled and committed; a moment just after A's last record was appended; batch B, appended after it
    and handled too (when the worker runs). Returns (A, B, the moment in ms)."""
    first = await publish(kafka, [a_record(an_order()) for _ in range(8)])
    if payments_running:
        await committed_past(kafka, group_id, first)
    since_ms = max(ts for _, _, ts in first.values()) + 1
    await eventually(lambda: time.time() * 1000 > since_ms + 1, "the clock to pass the moment", every_s=0.005)
    then = await publish(kafka, [a_record(an_order()) for _ in range(8)])
    assert min(ts for _, _, ts in then.values()) >= since_ms > max(ts for _, _, ts in first.values()), "the premise"
    if payments_running:
        await committed_past(kafka, group_id, then)
    return first, then, since_ms


def as_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def fleet_replay(group_id: str, *args: str):
    """`fleet replay payments ...` in its own process, for the test's group; in a thread, so the worker in this
    process goes on meanwhile."""
    env = {**os.environ, "PAYMENTS_GROUP_ID": group_id}
    return await asyncio.to_thread(run_fleet, "replay", "payments", *args, cwd=REPO, env=env, timeout_s=120)


def moves_in(output: str) -> dict[tuple[str, int], int]:
    """Where the command said each partition goes: {(topic, partition): target}."""
    return {(m["topic"], int(m["partition"])): int(m["target"]) for m in MOVE.finditer(output)}


def read_again(lines, ids) -> Counter:
    """How many times payments handled each of these events as already decided (its inbox had it)."""
    return Counter(
        line["event_id"]
        for line in lines
        if line.get("event") == "event_handled" and line.get("decided") == "order_already_decided"
        and line.get("event_id") in ids
    )


def a_payments_worker(kafka: str, group_id: str):
    return create_payments(PaymentsSettings(group_id=group_id, kafka=KafkaSettings(bootstrap_servers=kafka)))


async def paused(kafka: str, group_id: str) -> bool:
    keyring = KeyStore(keyring_path(Path(os.environ["FLEET_KEYS_DIR"]))).keyring()
    orders = await standing_orders(kafka, keyring, ["payments"], groups={"payments": group_id})
    return orders["payments"].is_paused


# ---- the tests ---------------------------------------------------------------------------------------------------------


async def test_a_replay_reads_again_exactly_the_records_appended_since_the_moment_and_a_dry_run_moves_nothing(
    kafka, group_id
):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    with capture_logs(processors=[merge_event_context]) as lines:
        async with RunningApps(a_payments_worker(kafka, group_id)), TopicReader(kafka, [ControlIssued]) as control:
            first, then, since_ms = await a_moment_between(kafka, group_id, payments_running=True)
            handled = await committed_by(kafka, group_id)

            dry = await fleet_replay(group_id, "--since", as_time(since_ms), "--dry-run")
            assert dry.returncode == 0, dry.stderr
            assert dry.stdout.rstrip().endswith("dry run: nothing moved")
            assert_between(moves_in(dry.stdout), first, then)
            after_dry_run = await committed_by(kafka, group_id)
            assert all(after_dry_run[tp] >= o for tp, o in handled.items()), "a dry run moves no partition back"

            moved = await fleet_replay(group_id, "--since", as_time(since_ms))
            assert moved.returncode == 0, moved.stderr
            assert_between(moves_in(moved.stdout), first, then)
            assert "took the new offsets" in moved.stdout and "resumed payments" in moved.stdout

            await eventually(lambda: len(read_again(lines, then)) == len(then), "payments to read B again")
            await committed_past(kafka, group_id, then)
            commands = await control.wait_for(
                lambda seen: any(s.event.group == group_id and s.event.command == "resume" for s in seen)
            )
    assert read_again(lines, then) == Counter(list(then)), "each record appended since the moment, read once again"
    assert not read_again(lines, first), "nothing appended before the moment was read again"
    ours = [s.event for s in commands if s.event.group == group_id]
    assert [c.command for c in ours] == ["pause", "seek", "resume"], "the dry run issued nothing"
    assert {(o.topic, o.partition): o.offset for o in ours[1].offsets} == moves_in(moved.stdout)
    assert not await paused(kafka, group_id), "the service ends resumed"


async def test_a_replay_while_no_replica_runs_commits_the_new_offsets_and_the_next_replica_reads_from_there(
    kafka, group_id
):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    with capture_logs(processors=[merge_event_context]) as lines:
        async with RunningApps(a_payments_worker(kafka, group_id)):
            first, then, since_ms = await a_moment_between(kafka, group_id, payments_running=True)
        await eventually(
            lambda: _no_members(kafka, group_id), f"group {group_id} to be empty once its worker stopped"
        )
        moved = await fleet_replay(group_id, "--since", as_time(since_ms))
        assert moved.returncode == 0, moved.stderr
        assert "the new offsets are committed" in moved.stdout
        assert_between(moves_in(moved.stdout), first, then)
        committed = await committed_by(kafka, group_id)
        assert {tp: committed[tp] for tp in moves_in(moved.stdout)} == moves_in(moved.stdout), "committed as planned"
        async with RunningApps(a_payments_worker(kafka, group_id)):
            await eventually(lambda: len(read_again(lines, then)) == len(then), "the next worker to read B again")
            await committed_past(kafka, group_id, then)
    assert read_again(lines, then) == Counter(list(then)) and not read_again(lines, first)
    assert not await paused(kafka, group_id)


async def _no_members(kafka: str, group_id: str):
    members = (await group_members(kafka, [group_id]))[group_id]
    return members == 0 or NotYet(members)


async def test_replicas_that_do_not_take_the_new_offsets_in_time_leave_the_service_paused_and_say_so_in_one_line(
    kafka, group_id
):
    """A member of the group that is not a fleet worker never applies the seek: the command gives up after --timeout,
    names the partition that did not move, and leaves the service paused (exit 75)."""
    from aiokafka import AIOKafkaConsumer

    await start_group_at_end(kafka, group_id, [OrderPlaced])
    appended = await publish(kafka, [a_record(an_order())])
    since_ms = min(ts for _, _, ts in appended.values())
    await start_group_at_end(kafka, group_id, [OrderPlaced])  # as if handled
    deaf = AIOKafkaConsumer(ORDERS, **client_options(kafka), group_id=group_id, enable_auto_commit=False)
    await deaf.start()
    try:
        await eventually(lambda: deaf.assignment(), "the deaf consumer to join its group", timeout_s=30)
        result = await fleet_replay(group_id, "--since", as_time(since_ms), "--timeout", "2")
        line = assert_fails_in_one_line(result, 75)
        ((partition, offset, _),) = appended.values()
        assert re.search(rf"{ORDERS}\[{partition}\] at \d+ \(not {offset}\)", line) and "stays paused" in line, line
        assert await paused(kafka, group_id)
    finally:
        await deaf.stop()
        resumed = await asyncio.to_thread(
            run_fleet, "resume", "payments", "--group", group_id, cwd=REPO, env=dict(os.environ)
        )
        assert resumed.returncode == 0, resumed.stderr


async def test_a_moment_in_the_future_or_older_than_the_topic_s_retention_is_refused_in_one_line(kafka, group_id):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    before = await committed_offsets(kafka, group_id)
    future = assert_fails_in_one_line(await fleet_replay(group_id, "--since", "2099-01-01T00:00:00Z"), 64)
    assert "in the future" in future
    too_old = assert_fails_in_one_line(await fleet_replay(group_id, "--since", "8d"), 64)
    assert f"older than {ORDERS}'s retention (7d)" in too_old
    assert await committed_offsets(kafka, group_id) == before
    assert not await paused(kafka, group_id)
