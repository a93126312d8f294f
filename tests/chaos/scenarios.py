"""The chaos scenarios of the delivery-guarantees issue: each strikes the running fleet once orders flow, then the run's
figures say whether anything was lost, done twice, reordered or wrongly dead-lettered."""

from __future__ import annotations

import asyncio
import inspect
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from aiokafka import AIOKafkaConsumer

from contracts import REGISTRY, OrderPlaced
from fleet.local import kafka_cluster
from fleet.catalog import WORKERS
from tests.support.waiting import eventually

from .figures import figures_of, progress_after_strike
from .harness import ChaosFleet, Feed, plan_orders

__all__ = ["SCENARIOS", "Scenario", "run_scenario"]

Strike = Callable[[ChaosFleet, Feed], Awaitable[None]]
SLOWED = "fault_injected_slow_handler"
ORDERS_TOPIC = REGISTRY.of(OrderPlaced).name  # payments' input: every order passes through it
# How long the controller waits for a silent node before fencing it (fleet/local/broker_files/cluster.properties.template).
SESSION_TIMEOUT_S = int(kafka_cluster.template_setting("broker.session.timeout.ms")) / 1000
PAUSED_S = 1.5 * SESSION_TIMEOUT_S + 3.0  # surely fenced meanwhile, yet a short wait for the test
KILLED_DOWN_S = 10.0  # longer than the session timeout: the leadership moves while the node is down
# A worker without static membership keeps aiokafka's session.timeout.ms; a paused replica must outlive it in its group.
CONSUMER_SESSION_TIMEOUT_S = inspect.signature(AIOKafkaConsumer).parameters["session_timeout_ms"].default / 1000
PAYMENTS_PAUSED_S = 2 * CONSUMER_SESSION_TIMEOUT_S + 5.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    strike: Strike
    # Extra environment per service, given `orders` (fault injection, tighter bounds).
    service_env: Callable[[int], dict[str, dict[str, str]]] = field(default=lambda orders: {})
    # Replicas per service at the start (None: the harness's default, payments × 2).
    scale: dict[str, int] | None = None
    # On a three-node cluster (replication factor 3, min.insync.replicas 2) instead of the single chaos broker.
    cluster: bool = False


async def _kill_workers_mid_batch(fleet: ChaosFleet, feed: Feed) -> None:
    for share, service in ((0.3, "payments"), (0.5, "inventory"), (0.6, "notifications"), (0.7, "tracker")):
        await feed.reached(share).wait()
        fleet.kill_replica(service, 1, signal.SIGKILL)


async def _sigterm_during_slow_handlers(fleet: ChaosFleet, feed: Feed) -> None:
    # payments-1's slow handler ends within the graceful bound (committed); shipping-1's outlives it (redelivered).
    for service in ("payments", "shipping"):
        await fleet.wait_for_log(service, 1, SLOWED)
        await asyncio.sleep(0.5)
        fleet.kill_replica(service, 1, signal.SIGTERM)


def _slow_handlers(orders: int) -> dict[str, dict[str, str]]:
    return {
        "payments": {"FLEET_FAULTS_SLOW_S": "3", "FLEET_FAULTS_SLOW_AFTER": str(orders // 8), "FLEET_FAULTS_SLOW_COUNT": "1"},
        "shipping": {"FLEET_FAULTS_SLOW_S": "20", "FLEET_FAULTS_SLOW_AFTER": str(orders // 5), "FLEET_FAULTS_SLOW_COUNT": "1",
                     "FLEET_KAFKA_GRACEFUL_TIMEOUT_S": "5"},
    }


async def _restart_broker(fleet: ChaosFleet, feed: Feed) -> None:
    await feed.reached(0.4).wait()
    await fleet.kill_broker(down_s=5.0)


async def _strike_busy_leader(fleet: ChaosFleet, feed: Feed, *, how: str) -> None:
    """Once orders flow, the node leading the orders topic's fullest partition is struck: SIGKILLed and started again
    KILLED_DOWN_S later, or SIGSTOPped for PAUSED_S (fenced meanwhile), then resumed."""
    await feed.reached(0.4).wait()
    partition, state = await fleet.busiest_partition(ORDERS_TOPIC)
    node = state["leader"]
    fleet.notes["struck"] = {"node": node, "topic": ORDERS_TOPIC, "partition": partition, "leader_before": node,
                             "isr_before": state["isr"], "how": how}
    if how == "sigkill":
        await fleet.kill_node(node, ORDERS_TOPIC, partition, down_s=KILLED_DOWN_S)
    else:
        fleet.notes["struck"].update(session_timeout_s=SESSION_TIMEOUT_S, paused_s=PAUSED_S)
        await fleet.pause_node(node, ORDERS_TOPIC, partition, PAUSED_S)


async def _kill_busy_leader(fleet: ChaosFleet, feed: Feed) -> None:
    await _strike_busy_leader(fleet, feed, how="sigkill")


async def _pause_busy_leader(fleet: ChaosFleet, feed: Feed) -> None:
    await _strike_busy_leader(fleet, feed, how="sigstop")


def _slower_than_max_poll(orders: int) -> dict[str, dict[str, str]]:
    # Both payments replicas: a consumer that outlasts max.poll.interval.ms is put out of the group mid-handler.
    return {"payments": {"FLEET_KAFKA_MAX_POLL_INTERVAL_MS": "5000", "FLEET_FAULTS_SLOW_S": "8",
                         "FLEET_FAULTS_SLOW_AFTER": str(orders // 6), "FLEET_FAULTS_SLOW_COUNT": "2"}}


async def _watch_slow_handlers(fleet: ChaosFleet, feed: Feed) -> None:
    await fleet.wait_for_log("payments", 1, SLOWED)


async def _database_outage(fleet: ChaosFleet, feed: Feed) -> None:
    await feed.reached(0.4).wait()
    await fleet.stop_database(down_s=6.0)


async def _scale_payments(fleet: ChaosFleet, feed: Feed) -> None:
    """payments 1 → 3, SIGKILL one of the three, 3 → 1, while orders flow; the other services' groups must not notice."""
    others = [s for s in WORKERS if s != "payments"]
    await feed.reached(0.1).wait()
    members_before = {g: sorted(m.member_id for m in d.members) for g, d in (await fleet.groups(others)).items()}
    assigned_before = fleet.assignments_logged(others)
    await fleet.scale("payments", 3)
    await fleet.until_members("payments", 3)
    status = await fleet.status_json("payments")
    [row] = status["services"]
    fleet.notes["status_while_three"] = {
        "member_count": row["member_count"], "replicas_up": row["replicas"]["up"] if row["replicas"] else None,
        "partitions_per_member": sorted(len(m["partitions"]) for m in row["members"]), "warnings": row["warnings"],
    }
    three = {m.member_id for m in (await fleet.groups(["payments"]))["payments"].members}
    killed = fleet.supervisor.replica("payments", 2).process.pid
    fleet.kill_replica("payments", 2, signal.SIGKILL)
    await fleet.until_restarted("payments", 2, killed)
    # The killed member stays in the group until its session times out; the restarted one joins as a new member.
    await fleet.until_members("payments", 3, other_than=three)
    await fleet.scale("payments", 1)
    await fleet.until_members("payments", 1)
    members_after = {g: sorted(m.member_id for m in d.members) for g, d in (await fleet.groups(others)).items()}
    assigned_after = fleet.assignments_logged(others)
    fleet.notes["other_groups_unchanged"] = members_before == members_after and all(members_before.values())
    fleet.notes["other_assignments_logged"] = {"before": assigned_before, "after": assigned_after}
    fleet.notes["other_groups_rebalanced"] = sorted(k for k in assigned_after if assigned_after[k] != assigned_before.get(k))
    fleet.notes["payments_replicas_at_end"] = len(fleet.supervisor.replicas_of("payments"))


async def _pause_payments(fleet: ChaosFleet, feed: Feed) -> None:
    """`fleet pause payments` while orders flow, for twice the consumers' session timeout, then `fleet resume`: the
    paused group keeps its members and commits nothing, its lag grows in `fleet status`, and the flow then drains."""
    await feed.reached(0.3).wait()
    members_before = sorted(m.member_id for m in (await fleet.groups(["payments"]))["payments"].members)
    assigned_before = fleet.assignments_logged(["payments"])
    await fleet.operator("pause", "payments", "--reason", "chaos: payments held under load")
    began = time.monotonic()
    first = (await fleet.status_json("payments"))["services"][0]  # while the feed goes on: the lag must grow
    await asyncio.sleep(PAYMENTS_PAUSED_S - (time.monotonic() - began))
    second = (await fleet.status_json("payments"))["services"][0]
    members_after = sorted(m.member_id for m in (await fleet.groups(["payments"]))["payments"].members)
    await fleet.operator("resume", "payments")
    fleet.notes["paused"] = {
        "paused_s": PAYMENTS_PAUSED_S,
        "session_timeout_s": CONSUMER_SESSION_TIMEOUT_S,
        "status_paused": bool(first["paused"]) and bool(second["paused"]),
        "lag_while_paused": [first["lag_total"], second["lag_total"]],
        "members_unchanged": members_before == members_after and bool(members_before),
        "no_new_assignment": fleet.assignments_logged(["payments"]) == assigned_before,
    }


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("worker_sigkill", "SIGKILL payments-1, inventory, notifications and tracker mid-batch; the supervisor restarts each.",
                 _kill_workers_mid_batch),
        Scenario("sigterm_slow_handler", "SIGTERM while a handler is slow: one finishes within the graceful bound, one outlives it.",
                 _sigterm_during_slow_handlers, _slow_handlers),
        Scenario("broker_restart", "SIGKILL the broker mid-run; it is down for 5 s, then restarts on the same data.", _restart_broker),
        Scenario("slower_than_max_poll", "Handlers of both payments replicas take 8 s with max.poll.interval.ms at 5 s.",
                 _watch_slow_handlers, _slower_than_max_poll),
        Scenario("dependency_outage", "payments' PostgreSQL stops for 6 s mid-run, then comes back.", _database_outage),
        Scenario("scale_payments", "payments scaled 1 → 3 while orders flow, one of the three SIGKILLed, then 3 → 1.",
                 _scale_payments, scale={"payments": 1}),
        Scenario("pause_payments", f"`fleet pause payments` while orders flow, for {PAYMENTS_PAUSED_S:g} s (its consumers' "
                 f"session timeout is {CONSUMER_SESSION_TIMEOUT_S:g} s), then `fleet resume payments`.", _pause_payments),
        Scenario("leader_sigkill", f"Three-node cluster: SIGKILL the leader of the busiest orders partition mid-run; it is "
                 f"down for {KILLED_DOWN_S:g} s, then restarts on its data and rejoins the ISR.", _kill_busy_leader, cluster=True),
        Scenario("broker_sigstop", f"Three-node cluster: SIGSTOP the leader of the busiest orders partition for "
                 f"{PAUSED_S:g} s (its session timeout is {SESSION_TIMEOUT_S:g} s), then SIGCONT.",
                 _pause_busy_leader, cluster=True),
    )
}


async def run_scenario(scenario: Scenario, *, orders: int, seed: int, work: Path, per_second: float, settle_timeout_s: float) -> dict:
    """Runs one scenario on a fresh broker and fresh stores; returns its figures, timeline and verdict."""
    print(f"\n== {scenario.name}: {scenario.description}", flush=True)
    began = time.monotonic()
    plan = plan_orders(orders, seed)
    fleet = ChaosFleet(work / scenario.name, service_env=scenario.service_env(orders), scale=scenario.scale, cluster=scenario.cluster)
    stop_watch = asyncio.Event()
    async with fleet:
        feed = Feed(fleet, plan, per_second=per_second, poison_every=max(1, orders // 10))
        await feed.publish_stock(plan.initial_stock, "rcpt-initial")
        await _until_stocked(fleet, plan.initial_stock)
        stop_trickle = asyncio.Event()
        trickle = asyncio.create_task(feed.trickle_stock(stop_trickle))
        watch = asyncio.create_task(fleet.watch_progress(stop_watch)) if scenario.cluster else None
        strike = asyncio.create_task(scenario.strike(fleet, feed))
        await feed.run()
        await strike
        stop_trickle.set()
        await trickle
        plan.expected.poison = feed.poison
        dead_letters = sum(len(p.groups) for p in feed.poison)
        settled = await fleet.wait_until_settled(plan.expected, dead_letters, settle_timeout_s)
        stop_watch.set()
        done_at = await watch if watch else {}
        tails = {(p.topic, p.partition, p.offset) for p in feed.poison if p.reason == "invalid_header"}
        fleet.notes["lag_after_settled"] = await fleet.until_no_lag(poison_tails=tails)
    figures = figures_of(plan.expected, await fleet.observe(plan))
    report = {"description": scenario.description, "settled": settled, "duration_s": round(time.monotonic() - began, 1),
              **figures.as_dict(), "evidence": fleet.evidence(), "timeline": fleet.timeline.entries}
    if fleet.strike_at is not None:  # the failover scenarios: how long the fleet stood still
        report.update(progress_after_strike(fleet.strike_at, feed.sent_at, done_at))
    report["passed"] = settled and figures.passed
    _print_figures(scenario.name, report)
    return report


async def within_deadline(scenario_run: Awaitable[dict], deadline_s: float | None, *, logs: Path) -> dict:
    """The scenario's report, or, past `deadline_s`, a failed one, after printing where the run stood: a stall then says
    which await never returned, and what each replica last logged, before the run is cancelled and its fleet stopped."""
    run = asyncio.ensure_future(scenario_run)
    try:
        return await asyncio.wait_for(asyncio.shield(run), deadline_s)
    except asyncio.TimeoutError:
        print(f"\n!! deadline of {deadline_s:g}s passed; what every task was awaiting:", flush=True)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.print_stack(limit=6, file=sys.stdout)
        for log in sorted(logs.glob("*.log")):
            print(f"-- last lines of {log.name}:", *log.read_text(errors="replace").splitlines()[-12:], sep="\n", flush=True)
        run.cancel()
        try:
            await run  # leaves the fleet's `async with`: the replicas are stopped, not orphaned
        except (asyncio.CancelledError, Exception) as stopped:  # noqa: BLE001 - reported, the verdict is already failed
            print(f"!! cancelled: {stopped!r}", flush=True)
        return {"passed": False, "settled": False, "timed_out_after_s": deadline_s}


async def _until_stocked(fleet: ChaosFleet, levels: dict[str, int], timeout_s: float = 60.0) -> None:
    """The first delivery must be in inventory's store before any order is: otherwise an early order would be short."""
    await eventually(lambda: fleet.stock_levels() == levels, "inventory to record the first delivery", timeout_s=timeout_s,
                     every_s=0.2, error=RuntimeError, ignoring=(sqlite3.Error, RuntimeError))


def _print_figures(name: str, report: dict) -> None:
    dead = report["dead_letters"]
    print(
        f"   {name}: {'PASSED' if report['passed'] else 'FAILED'} in {report['duration_s']}s | orders {report['orders']} "
        f"lost {report['lost']} wrong {report['wrong_outcome']} double effects {report['double_effects_total']} "
        f"{report['double_effects']} | per-key inversions {report['per_key_inversions']} | dead letters {dead['distinct']} "
        f"of {dead['expected']} expected (missing {dead['missing']}, unexpected {dead['unexpected']}, wrong reason "
        f"{dead['wrong_reason']}) | retried {report['retried_events']}, wire duplicates {report['wire_duplicates_deduplicated']}",
        flush=True,
    )
    if "progress_resumed_after_s" in report:
        print(f"     progress resumed {report['progress_resumed_after_s']}s after the strike (an order's trip before it: "
              f"{report['order_latency_before_strike_s']}s, orders sent after it: {report['orders_sent_after_strike']})", flush=True)
    print(f"     evidence: {report['evidence']}", flush=True)
    for label, examples in report["examples"].items():
        for example in examples:
            print(f"     {label}: {example}", flush=True)
