"""The fleet under chaos: a broker (or a three-node cluster) and a PostgreSQL cluster of its own, every worker as
supervised processes, a feed of orders whose outcomes are known in advance, poison among them, and the readers that
collect what really happened."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from contracts import REGISTRY, OrderPlaced, PaymentAuthorized, PrivateKey, Record, StockReceived, encode, sign, source_of
from fleet.local import kafka_cluster
from fleet.local import kafka as kafka_local
from fleet.local import postgres as postgres_local
from fleet.ops.demo import CATALOGUE, demo_orders
from fleet.ops.groups import describe_groups
from fleet.runtime.keys import UPSTREAM_SIGNERS, KeyStore, init_keys
from fleet.ops.reading import read_spans
from fleet.ops.supervisor import Supervisor
from fleet.ops.topics import apply_topics
from fleet.catalog import WORKERS
from services.payments import core as payments_core
from services.payments.settings import PaymentsSettings
from tests.support.kafka import groups_have_members
from tests.support.waiting import NotYet, eventually

from .figures import NOTIFICATIONS, TERMINAL_STATUS, Expected, Observed, Poison, WireEvent

__all__ = ["ChaosFleet", "Feed", "chaos_cluster_env", "plan_orders"]

REPO = Path(__file__).resolve().parents[2]
# Overridable to run beside another checkout's chaos run (FLEET_CHAOS_KAFKA_PORT, ..._CONTROLLER_PORT, ..._POSTGRES_PORT).
# Below Linux's ephemeral range (32768-60999): a client that keeps connecting to a stopped server's port inside that range
# can be given that very port as its own and connect to itself, and the server then cannot bind it to come back.
KAFKA_PORT = int(os.environ.get("FLEET_CHAOS_KAFKA_PORT", 29092))
CONTROLLER_PORT = int(os.environ.get("FLEET_CHAOS_CONTROLLER_PORT", KAFKA_PORT + 1))
POSTGRES_PORT = int(os.environ.get("FLEET_CHAOS_POSTGRES_PORT", 25433))
# The three-node cluster of the failover scenarios: ports and data apart from `python -m fleet.local.kafka_cluster`'s, whose
# data a chaos run would otherwise wipe (FLEET_CHAOS_CLUSTER_PORTS moves them).
CLUSTER_PORTS = os.environ.get("FLEET_CHAOS_CLUSTER_PORTS", "29192,29292,29392")
OUT_OF_STOCK = "SKU-ESPRESSO-006"  # never delivered: an authorized order with it is backordered, whatever the timing
PLENTY = 1_000_000  # units of every other product: never short, so each outcome is known before the run
SCALED = {"payments": 2}  # two replicas share payments' partitions (and its PostgreSQL ledger)
FLOW_TOPICS = [t.name for t in REGISTRY.topics]


def chaos_cluster_env() -> dict[str, str]:
    """Where the failover scenarios' cluster lives, for `python -m fleet.local.kafka_cluster status|logs|stop` beside a run."""
    return {"FLEET_KAFKA_CLUSTER_HOME": str(REPO / ".cache" / "kafka-chaos-cluster"), "FLEET_KAFKA_CLUSTER_PORTS": CLUSTER_PORTS}


def configure_environment(work: Path, *, cluster: bool = False) -> None:
    """Everything the harness and its children read: a broker (the cluster's three nodes with `cluster`), keys, stores
    and feed files of the chaos run's own."""
    os.environ.update({
        "FLEET_KAFKA_HOME": str(REPO / ".cache" / "kafka-chaos"),
        "FLEET_KAFKA_PORT": str(KAFKA_PORT),
        "FLEET_KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT),
        **chaos_cluster_env(),
        "FLEET_KAFKA_BOOTSTRAP_SERVERS": kafka_cluster.bootstrap_servers(kafka_cluster.client_ports(CLUSTER_PORTS))
        if cluster else f"127.0.0.1:{KAFKA_PORT}",
        "FLEET_POSTGRES_HOME": str(REPO / ".cache" / "postgres-chaos"),
        "FLEET_POSTGRES_PORT": str(POSTGRES_PORT),
        "FLEET_KEYS_DIR": str(work / "keys"),
        "FLEET_LOG_LEVEL": "INFO",
        "NOTIFICATIONS_OUTBOX_PATH": str(work / "mail-feed.jsonl"),
    })
    for service in WORKERS:
        os.environ[f"{service.upper()}_STORE_URL"] = f"sqlite:///{work / service}.db"


@dataclass
class Plan:
    """The orders to publish, with the outcome each must reach and the stock inventory must end with."""

    orders: list[OrderPlaced]
    expected: Expected
    initial_stock: dict[str, int]


def plan_orders(count: int, seed: int) -> Plan:
    """Demo orders (some over a limit, some in a currency payments refuses), decided in advance by payments' own rules."""
    policy = PaymentsSettings(_env_file=None).credit_policy()
    orders = list(demo_orders(count, seed=seed))
    outcomes, stock = {}, {sku: PLENTY for sku in CATALOGUE if sku != OUT_OF_STOCK}
    for order in orders:
        decision = payments_core.decide(order, policy, now=datetime.now(timezone.utc))
        if not isinstance(decision, PaymentAuthorized):
            outcomes[order.order_id] = "declined"
        elif any(item.sku == OUT_OF_STOCK for item in order.items):
            outcomes[order.order_id] = "backordered"
        else:
            outcomes[order.order_id] = "shipped"
            for item in order.items:
                stock[item.sku] -= item.quantity
    initial = {sku: PLENTY for sku in stock}
    return Plan(orders, Expected(outcomes=outcomes, stock=stock), initial)


@dataclass
class Timeline:
    """What happened when, in seconds since the run began: faults, recoveries, milestones."""

    began: float = field(default_factory=time.monotonic)
    entries: list[dict] = field(default_factory=list)

    def note(self, what: str, **details) -> None:
        entry = {"t_s": round(time.monotonic() - self.began, 2), "event": what, **details}
        self.entries.append(entry)
        print(f"  [{entry['t_s']:7.2f}s] {what} {' '.join(f'{k}={v}' for k, v in details.items())}", flush=True)


class ChaosFleet:
    """`async with ChaosFleet(work, service_env=...) as fleet:` a fresh broker (or, with `cluster`, a fresh three-node
    cluster with every registry topic on three replicas), topics, keys, stores and every worker."""

    def __init__(self, work: Path, *, service_env: dict[str, dict[str, str]] | None = None,
                 scale: dict[str, int] | None = None, cluster: bool = False) -> None:
        self.work = work
        self.service_env = service_env or {}
        self.scale_at_start = dict(SCALED if scale is None else scale)
        self.cluster = cluster
        self.notes: dict = {}  # what a scenario found out on the way, reported with the evidence
        self.timeline = Timeline()
        self.supervisor: Supervisor | None = None
        self.ports = kafka_cluster.client_ports(CLUSTER_PORTS) if cluster else [KAFKA_PORT]
        self.bootstrap = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        self.strike_at: float | None = None  # time.monotonic() of a failover scenario's strike

    async def __aenter__(self) -> ChaosFleet:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        configure_environment(self.work, cluster=self.cluster)
        await asyncio.to_thread(self._fresh_cluster if self.cluster else self._fresh_broker)
        self.timeline.note("broker_ready", bootstrap=self.bootstrap)
        payments_dsn = await asyncio.to_thread(self._fresh_postgres)
        init_keys(self.work / "keys", [*WORKERS, *UPSTREAM_SIGNERS])
        # On the cluster, three replicas of each partition; min.insync.replicas then defaults to 2.
        await apply_topics(self.bootstrap, replication_factor=len(self.ports))
        self.supervisor = Supervisor(
            list(WORKERS), state_dir=self.work, grace_s=30.0, scale=self.scale_at_start,
            env={"PAYMENTS_STORE_URL": payments_dsn}, service_env=self.service_env,
            state_file=self.work / "fleet.json", extra_state={"bootstrap": self.bootstrap},
        )
        await self.supervisor.start()
        await self._until_groups_have_members()
        self.timeline.note("fleet_ready", replicas=len(self.supervisor.replicas))
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
            self.timeline.note("fleet_stopped", exit_codes={r.name: r.process.returncode for r in self.supervisor.replicas})

    def _fresh_broker(self) -> None:
        kafka_cluster.stop()  # an earlier failover scenario's cluster would only take the cores
        kafka_local.stop()
        shutil.rmtree(kafka_local.home() / "data", ignore_errors=True)  # formatted anew at start: no earlier run's records
        kafka_local.start()

    def _fresh_cluster(self) -> None:
        kafka_local.stop()  # the single chaos broker of an earlier scenario would only take the cores
        kafka_cluster.stop()
        for node in kafka_cluster.NODES:  # formatted anew at start, with a new cluster id: no earlier run's records
            shutil.rmtree(kafka_cluster.node_folder(node) / "data", ignore_errors=True)
        kafka_cluster.start()

    def _fresh_postgres(self) -> str:
        postgres_local.start()
        return postgres_local.ensure_database("chaos_payments", fresh=True)

    async def _until_groups_have_members(self, timeout_s: float = 90.0) -> None:
        wanted = {service: self.scale_at_start.get(service, 1) for service in WORKERS}
        await eventually(lambda: groups_have_members(self.bootstrap, wanted), f"the fleet's groups to fill (logs in {self.work / 'logs'})",
                         timeout_s=timeout_s, every_s=0.5, error=RuntimeError)

    # ---- faults -------------------------------------------------------------------------------------------------

    def kill_replica(self, service: str, index: int = 1, signum: int = 9) -> None:
        pid = self.supervisor.signal(service, index, signum)
        self.timeline.note("replica_signalled", replica=f"{service}-{index}", signal=signum, pid=pid)

    async def wait_for_log(self, service: str, index: int, event: str, timeout_s: float = 120.0) -> None:
        """Until the replica's JSON log has a line for `event` (a fault taking effect, for instance)."""
        path = self.work / "logs" / f"{service}-{index}.log"
        await eventually(lambda: path.exists() and re.search(rf'"event": ?"{re.escape(event)}"', path.read_text(errors="replace")),
                         f"{service}-{index} to log {event}", timeout_s=timeout_s, every_s=0.1, error=RuntimeError)
        self.timeline.note("log_seen", replica=f"{service}-{index}", log_event=event)

    async def kill_broker(self, down_s: float) -> None:
        pid = kafka_local.status().pid
        os.kill(pid, 9)
        self.timeline.note("broker_killed", pid=pid)
        await asyncio.sleep(down_s)
        began = time.monotonic()
        await asyncio.to_thread(kafka_local.start, 180.0)
        self.timeline.note("broker_restarted", took_s=round(time.monotonic() - began, 1))

    # ---- failover on the cluster: one node at a time ----------------------------------------------------------------

    async def partitions(self, topic: str, *, not_from: int | None = None) -> dict[int, dict]:
        """partition → {leader, replicas, isr} of `topic`, as the first node (other than `not_from`) that answers says."""
        for node, port in zip(kafka_cluster.NODES, self.ports):
            if node != not_from and (found := await _partition_states(port, topic)):
                return found
        raise RuntimeError(f"no node of the cluster describes {topic}")

    async def busiest_partition(self, topic: str) -> tuple[int, dict]:
        """The partition of `topic` holding the most records, and its leader, replicas and ISR."""
        ends = await _end_offsets(self.bootstrap, [topic])
        partition = max(ends, key=lambda tp: (ends[tp], -tp.partition)).partition
        return partition, (await self.partitions(topic))[partition]

    def mark_strike(self) -> None:
        """Now is when the fault strikes: `progress_resumed_after_s` counts from here."""
        self.strike_at = time.monotonic()

    async def kill_node(self, node: int, topic: str, partition: int, down_s: float) -> None:
        """SIGKILL one node; it stays down `down_s` seconds (the partition's leadership moves meanwhile), then starts
        again on its data; returns once it is back in the partition's ISR."""
        self.mark_strike()
        pid = kafka_cluster.signal_node(node, signal.SIGKILL)
        self.timeline.note("broker_killed", node=node, pid=pid)
        await self.until_leader_moved(topic, partition, node, timeout_s=down_s + 60.0)
        await asyncio.sleep(max(0.0, down_s - (time.monotonic() - self.strike_at)))
        began = time.monotonic()
        await asyncio.to_thread(kafka_cluster.start_node, node, 180.0)
        self.timeline.note("broker_restarted", node=node, took_s=round(time.monotonic() - began, 1))
        await self.until_back_in_isr(topic, partition, node)

    async def pause_node(self, node: int, topic: str, partition: int, paused_s: float) -> None:
        """SIGSTOP one node for `paused_s` seconds (longer than its session with the controller lasts), then SIGCONT;
        returns once it is back in the partition's ISR."""
        self.mark_strike()
        pid = kafka_cluster.signal_node(node, signal.SIGSTOP)
        try:
            self.timeline.note("broker_paused", node=node, pid=pid)
            await self.until_fenced(node, timeout_s=paused_s)
            await self.until_leader_moved(topic, partition, node, timeout_s=paused_s)
            await asyncio.sleep(max(0.0, paused_s - (time.monotonic() - self.strike_at)))
        finally:
            kafka_cluster.signal_node(node, signal.SIGCONT)  # even when the run fails: never leave a node frozen
        self.timeline.note("broker_resumed", node=node, paused_s=round(time.monotonic() - self.strike_at, 1))
        await self.until_back_in_isr(topic, partition, node)

    async def until_fenced(self, node: int, timeout_s: float) -> None:
        """Until every other node's metadata leaves `node` out of the live brokers: the controller fenced it."""
        others = [port for n, port in zip(kafka_cluster.NODES, self.ports) if n != node]

        async def fenced():
            seen = [await kafka_cluster.brokers_seen(port, 3.0) for port in others]
            return seen if all(s is not None and node not in s for s in seen) else NotYet(seen)

        seen = await eventually(fenced, f"node {node} to be fenced after the strike", timeout_s=timeout_s, every_s=0.25,
                                error=RuntimeError)
        self.timeline.note("broker_fenced", node=node, live_brokers=list(seen[0]), after_s=self._since_strike())

    async def until_leader_moved(self, topic: str, partition: int, old_leader: int, timeout_s: float) -> None:
        async def moved():
            state = (await self.partitions(topic, not_from=old_leader)).get(partition, {})
            return state if state.get("leader", -1) not in (-1, old_leader) else NotYet(state)

        state = await eventually(moved, f"the leadership of {topic}[{partition}] to leave node {old_leader}", timeout_s=timeout_s,
                                 every_s=0.25, error=RuntimeError)
        self.notes.setdefault("struck", {}).update(leader_while_down=state["leader"], isr_while_down=state["isr"])
        self.timeline.note("leader_moved", topic=topic, partition=partition, leader=state["leader"], isr=state["isr"],
                           after_s=self._since_strike())

    async def until_back_in_isr(self, topic: str, partition: int, node: int, timeout_s: float = 120.0) -> None:
        async def rejoined():
            state = (await self.partitions(topic, not_from=node)).get(partition, {})
            return state if node in state.get("isr", ()) else NotYet(state)

        state = await eventually(rejoined, f"node {node} to rejoin the ISR of {topic}[{partition}]", timeout_s=timeout_s,
                                 every_s=0.5, error=RuntimeError)
        self.notes.setdefault("struck", {}).update(isr_after=state["isr"], leader_after=state["leader"])
        self.timeline.note("back_in_isr", node=node, topic=topic, partition=partition, isr=state["isr"], after_s=self._since_strike())

    def _since_strike(self) -> float:
        return round(time.monotonic() - self.strike_at, 2)

    async def stop_database(self, down_s: float) -> None:
        await asyncio.to_thread(postgres_local.stop)
        self.timeline.note("database_stopped")
        await asyncio.sleep(down_s)
        await asyncio.to_thread(postgres_local.start)
        self.timeline.note("database_restarted")

    def evidence(self) -> dict:
        """What the replicas' logs and the supervisor say happened: faults that fired, commits the broker refused after a
        rebalance, failures and retries, restarts."""
        logs = [path.read_text(errors="replace") for path in sorted((self.work / "logs").glob("*.log"))]
        count = lambda needle: sum(text.count(needle) for text in logs)  # noqa: E731
        return {
            "slow_handlers_injected": count("fault_injected_slow_handler"),
            "commits_refused_after_rebalance": count("CommitFailedError("),
            "handler_failures": count('"event_failed"'),
            "retries_scheduled": count('"event_retry_scheduled"'),
            "outcomes_not_durable": count('"event_outcome_not_durable"'),
            "replica_restarts": {r.name: r.restarts for r in [*self.supervisor.retired, *self.supervisor.replicas] if r.restarts},
            **self.notes,
        }

    # ---- scaling and the groups as the broker sees them -------------------------------------------------------------

    async def scale(self, service: str, count: int) -> None:
        began = time.monotonic()
        done = await self.supervisor.scale(service, count)
        self.timeline.note("scaled", service=service, replicas=count, took_s=round(time.monotonic() - began, 1), **done)

    async def groups(self, group_ids: list[str]) -> dict:
        return await describe_groups(self.bootstrap, group_ids)

    async def until_members(self, service: str, count: int, timeout_s: float = 90.0, *, other_than: set[str] | None = None) -> None:
        """Until the service's group is Stable with exactly `count` members, and (given `other_than`) not that set of
        member ids: a SIGKILLed member lingers until its session times out, its restarted replica joins as a new one."""
        async def settled():
            group = (await self.groups([service]))[service]
            ids = {m.member_id for m in group.members}
            return (group.state == "Stable" and len(group.members) == count and ids != other_than) or NotYet(group)

        await eventually(settled, f"group {service} to settle at {count} members", timeout_s=timeout_s, every_s=0.5, error=RuntimeError)
        self.timeline.note("group_members", group=service, members=count)

    async def until_restarted(self, service: str, index: int, old_pid: int, timeout_s: float = 60.0) -> None:
        def restarted():
            replica = self.supervisor.replica(service, index)
            return replica.status == "up" and replica.process.pid != old_pid and replica.process.returncode is None and replica

        replica = await eventually(restarted, f"{service}-{index} to be restarted", timeout_s=timeout_s, every_s=0.1, error=RuntimeError)
        self.timeline.note("replica_restarted", replica=replica.name, pid=replica.process.pid)

    def assignments_logged(self, services: list[str]) -> dict[str, int]:
        """How many times each replica's consumers logged a new assignment ("... assigned to partitions"): once per
        consumer at start, once more per rebalance of its group."""
        found = {}
        for path in sorted((self.work / "logs").glob("*.log")):
            if path.stem.rsplit("-", 1)[0] in services:
                found[path.stem] = path.read_text(errors="replace").count("assigned to partitions")
        return found

    async def operator(self, *command: str) -> None:
        """An operator's `fleet` command against the running fleet (its keys, its broker), noted on the timeline."""
        import sys

        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleet", *command, "--bootstrap", self.bootstrap, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"fleet {' '.join(command)} failed ({process.returncode}): {err.decode()[-2000:]}")
        self.timeline.note(f"operator_{command[0]}", command=" ".join(command))

    async def status_json(self, *services: str) -> dict:
        """`fleet status --json` of the running fleet, as an operator would run it."""
        import sys

        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleet", "status", *services, "--json", "--interval", "0", "--bootstrap", self.bootstrap,
            "--state-file", str(self.work / "fleet.json"), cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"fleet status --json failed ({process.returncode}): {err.decode()[-2000:]}")
        return json.loads(out)

    async def until_no_lag(self, timeout_s: float = 60.0, *, poison_tails: set[tuple[str, int, int]] = frozenset()) -> dict[str, int]:
        """Until every service's group has committed up to the end of the topics it consumes; returns the lag seen last.

        `poison_tails` are the poison records left last on their partitions (topic, partition, offset). Lag on them alone is
        reported as `lag_on_poison_tail`, and anything else as `lag_unexplained`; both must be empty, since the worker
        commits past a record it dead-lettered even when FastStream could not parse it."""
        from fleet.ops.status import build_status, gather

        deadline = time.monotonic() + timeout_s
        while True:
            snapshot = await gather(self.bootstrap, list(WORKERS), dead_letters=False)
            lag = {row["service"]: row["lag_total"] for row in build_status(snapshot)["services"]}
            behind = [{"service": s, "topic": t, "partition": p, "committed": f.committed.get((t, p)), "end": end}
                      for s, f in snapshot.services.items() for (t, p), end in sorted(f.ends.items())
                      if end > f.committed.get((t, p), f.beginnings.get((t, p), 0))]
            unexplained = [b for b in behind if not (b["committed"] is not None and b["end"] - b["committed"] == 1
                                                     and (b["topic"], b["partition"], b["committed"]) in poison_tails)]
            if not unexplained or time.monotonic() > deadline:
                self.notes["lag_unexplained"] = unexplained
                self.notes["lag_on_poison_tail"] = [b for b in behind if b not in unexplained]
                self.timeline.note("lag", **lag)
                return lag
            await asyncio.sleep(1.0)

    # ---- progress and collection ----------------------------------------------------------------------------------

    def terminal_order_ids(self) -> list[str]:
        terminal = ", ".join(f"'{status}'" for status in TERMINAL_STATUS.values())
        return [row[0] for row in self._sqlite("tracker", f"SELECT order_id FROM order_status WHERE status IN ({terminal})")]

    async def watch_progress(self, stop: asyncio.Event, every_s: float = 0.2) -> dict[str, float]:
        """order id → when (time.monotonic()) the tracker first had it at its terminal status, looked up every `every_s`."""
        done: dict[str, float] = {}
        while not stop.is_set():
            try:
                now = time.monotonic()
                done.update((order_id, now) for order_id in self.terminal_order_ids() if order_id not in done)
            except (sqlite3.Error, RuntimeError):
                pass  # the tracker's store not created yet, or busy: look again
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except asyncio.TimeoutError:
                pass
        return done

    def terminal_orders(self) -> int:
        rows = self._sqlite("tracker", "SELECT status, COUNT(*) FROM order_status GROUP BY status")
        return sum(n for status, n in rows if status in TERMINAL_STATUS.values())

    def stock_levels(self) -> dict[str, int]:
        return dict(self._sqlite("inventory", "SELECT sku, units FROM stock"))

    def notifications(self) -> int:
        return self._sqlite("notifications", "SELECT COUNT(*) FROM notifications")[0][0]

    async def outbox_backlog(self) -> int:
        pending = "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"
        local = sum(self._sqlite(s, pending)[0][0] for s in WORKERS if s != "payments")
        return local + (await self._payments(pending))[0][0]

    async def wait_until_settled(self, expected: Expected, poison_dead_letters: int, timeout_s: float) -> bool:
        """Until every order is terminal, every customer told, every poison record dead-lettered and every outbox empty."""
        want_notifications = sum(len(NOTIFICATIONS[o]) for o in expected.outcomes.values())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                done = (self.terminal_orders() >= len(expected.outcomes) and self.notifications() >= want_notifications
                        and await self.dead_letter_count() >= poison_dead_letters and await self.outbox_backlog() == 0)
            except (sqlite3.Error, OSError, RuntimeError):
                done = False  # a store not created yet, or busy: look again
            if done:
                self.timeline.note("settled")
                return True
            await asyncio.sleep(1.0)
        self.timeline.note("not_settled", after_s=timeout_s)
        return False

    async def dead_letter_count(self) -> int:
        ends = await _end_offsets(self.bootstrap, [t.dead_letter_topic for t in REGISTRY.topics])
        return sum(ends.values())

    async def observe(self, plan: Plan) -> Observed:
        """What the broker and the stores hold once the fleet has stopped."""
        records = await _read_all(self.bootstrap, _all_topic_names())
        wire = [_wire_event(r) for r in records if r.topic in FLOW_TOPICS]
        retried = {dict(r.headers).get("ce_id", b"").decode() for r in records if ".retry." in r.topic}
        dead = [_dead_letter(r) for r in records if r.topic.endswith(".dlq")]
        receipts = [w for w in wire if w.topic == REGISTRY.of(StockReceived).name]
        receipt_ids = {w.event_id for w in receipts}
        handled = [row[0] for row in self._sqlite("inventory", "SELECT event_id FROM inbox WHERE group_id = 'inventory' ORDER BY rowid")]
        feed_path = Path(os.environ["NOTIFICATIONS_OUTBOX_PATH"])
        feed = [json.loads(line)["notification_id"] for line in feed_path.read_text().splitlines() if line.strip()] if feed_path.exists() else []
        return Observed(
            wire=wire,
            ledger=[row[0] for row in await self._payments("SELECT order_id FROM ledger")],
            stock=self.stock_levels(),
            notifications=[tuple(row) for row in self._sqlite("notifications", "SELECT order_id, template FROM notifications")],
            feed=feed,
            statuses=dict(self._sqlite("tracker", "SELECT order_id, status FROM order_status")),
            stock_handled=[event_id for event_id in handled if event_id in receipt_ids],
            receipts=receipts,
            retried=retried - {""},
            dead_letters=dead,
        )

    def _sqlite(self, service: str, sql: str) -> list[tuple]:
        path = self.work / f"{service}.db"
        if not path.exists():
            raise RuntimeError(f"{service} has no store yet")
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0) as connection:
            return connection.execute(sql).fetchall()

    async def _payments(self, sql: str) -> list[tuple]:
        import psycopg

        async with await psycopg.AsyncConnection.connect(postgres_local.dsn("chaos_payments")) as connection:
            return await (await connection.execute(sql)).fetchall()


class Feed:
    """Publishes the plan's orders at a steady pace with poison records among them, like an upstream storefront would:
    a publish that fails while the broker is down is sent again as the same record (same ce_id)."""

    def __init__(self, fleet: ChaosFleet, plan: Plan, *, per_second: float, poison_every: int) -> None:
        self.fleet, self.plan = fleet, plan
        self.per_second, self.poison_every = per_second, poison_every
        self.published = 0
        self.sent_at: dict[str, float] = {}  # order id → time.monotonic() when its first send began
        self.poison: list[Poison] = []
        self._milestones: list[tuple[float, asyncio.Event]] = []

    def reached(self, share: float) -> asyncio.Event:
        """Set once `share` of the orders are on the broker: when a scenario strikes."""
        event = asyncio.Event()
        if self.published >= share * len(self.plan.orders):
            event.set()
        self._milestones.append((share, event))
        return event

    async def publish_stock(self, quantities: dict[str, int], receipt_prefix: str, producer: _Producer | None = None) -> None:
        """One delivery, as the warehouse signs it; returns once the broker has every receipt."""
        if producer is None:
            async with _Producer(self.fleet.bootstrap) as producer:
                return await self.publish_stock(quantities, receipt_prefix, producer)
        signer = KeyStore.for_signer(self.fleet.work / "keys", "warehouse").signer()
        now = datetime.now(timezone.utc)
        for n, (sku, units) in enumerate(sorted(quantities.items())):
            receipt = StockReceived(receipt_id=f"{receipt_prefix}-{n:03d}", sku=sku, quantity=units, received_at=now)
            await producer.send(encode(receipt, source=source_of("warehouse"), signer=signer))

    async def run(self) -> None:
        storefront = KeyStore.for_signer(self.fleet.work / "keys", "storefront").signer()
        interval = 1.0 / self.per_second
        kinds = list(POISON)
        async with _Producer(self.fleet.bootstrap) as producer:
            for n, order in enumerate(self.plan.orders, start=1):
                self.sent_at[order.order_id] = time.monotonic()
                await producer.send(encode(order, source=source_of("storefront"), signer=storefront))
                self.published = n
                if n % self.poison_every == 0:
                    name = kinds[len(self.poison) % len(kinds)]
                    raw, reason = POISON[name](storefront)
                    where = await producer.send_raw(*raw)
                    self.poison.append(Poison(name, where.topic, where.partition, where.offset, reason,
                                              tuple(REGISTRY.named(where.topic).consumers)))
                for share, event in self._milestones:
                    if n >= share * len(self.plan.orders):
                        event.set()
                await asyncio.sleep(interval)
        self.fleet.timeline.note("feed_done", orders=self.published, poison=len(self.poison))

    async def trickle_stock(self, stop: asyncio.Event, every_s: float = 0.5) -> int:
        """Small deliveries of the plentiful products while orders flow: many records per key, to check per-key order."""
        rounds = 0
        async with _Producer(self.fleet.bootstrap) as producer:
            while not stop.is_set():
                rounds += 1
                await self.publish_stock({sku: 5 for sku in self.plan.initial_stock}, f"rcpt-trickle-{rounds:04d}", producer)
                for sku in self.plan.initial_stock:
                    self.plan.expected.stock[sku] += 5
                try:
                    await asyncio.wait_for(stop.wait(), every_s)
                except asyncio.TimeoutError:
                    pass
        return rounds


# ---- poison: one kind of each bad record the issue names ----------------------------------------------------------------

def _order_record(signer: PrivateKey, tag: str) -> Record:
    order = next(demo_orders(1))
    order = order.model_copy(update={"order_id": f"ord-poison-{tag}-{uuid.uuid4().hex[:8]}"})
    return encode(order, source=source_of("storefront"), signer=signer)


def _raw(record: Record, *, value: bytes | None = None, headers=None) -> tuple:
    return record.topic, record.key.encode(), record.value if value is None else value, record.raw_headers() if headers is None else headers


def _signed_value(signer: PrivateKey, value: bytes, tag: str) -> tuple:
    return _raw(sign(replace(_order_record(signer, tag), value=value), signer))


def _flipped(signer: PrivateKey) -> tuple:
    record = _order_record(signer, "signature")
    value = record.value
    return _raw(record, value=value[:5] + bytes([value[5] ^ 1]) + value[6:])


def _not_utf8(signer: PrivateKey) -> tuple:
    record = _order_record(signer, "utf8")
    return _raw(record, headers=[(k, b"\xff\xfe" if k == "ce_source" else v) for k, v in record.raw_headers()])


def _oversize(signer: PrivateKey) -> tuple:
    record = _order_record(signer, "oversize")
    return _raw(record, value=record.value + b" " * (REGISTRY.of(OrderPlaced).max_bytes + 1))


POISON: dict[str, Callable[[PrivateKey], tuple[tuple, str]]] = {
    "malformed JSON": lambda signer: (_signed_value(signer, b"{not json", "json"), "invalid_payload"),
    "schema-invalid": lambda signer: (_signed_value(signer, b'{"order_id": "x", "items": []}', "schema"), "invalid_payload"),
    "oversize": lambda signer: (_oversize(signer), "oversize"),
    "bad signature": lambda signer: (_flipped(signer), "bad_signature"),
    "non-UTF-8 header": lambda signer: (_not_utf8(signer), "invalid_header"),
}


# ---- Kafka plumbing ---------------------------------------------------------------------------------------------------

class _Producer:
    """An idempotent producer that sends a record again when the broker is away, until it is acknowledged. One that
    cannot go on (its sender stopped on an error it does not retry, or a send hangs) is replaced by a new one."""

    SEND_BOUND_S = 60.0  # far above the request timeout: only a wedged producer takes this long

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._producer = self._new()

    def _new(self):
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=10_000)

    async def __aenter__(self) -> _Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._producer.stop()

    async def send(self, record: Record):
        return await self.send_raw(record.topic, record.key.encode(), record.value, record.raw_headers())

    async def send_raw(self, topic: str, key: bytes, value: bytes, headers: list):
        from aiokafka.errors import KafkaError

        from fleet.runtime.errors import stops_the_producer

        while True:
            try:
                return await asyncio.wait_for(
                    self._producer.send_and_wait(topic, value=value, key=key, headers=headers), self.SEND_BOUND_S)
            except (KafkaError, asyncio.TimeoutError) as error:
                if isinstance(error, asyncio.TimeoutError) or stops_the_producer(error):
                    await self._replace(error)
                else:
                    await asyncio.sleep(0.5)  # the broker is away (a chaos scenario): the same record, again

    async def _replace(self, error: BaseException) -> None:
        print(f"  feed producer replaced after {type(error).__name__}: {error}", flush=True)
        while True:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(self._producer.stop(), 10.0)
            self._producer = self._new()
            try:
                await self._producer.start()
                return
            except Exception:  # noqa: BLE001 - the broker is still away: keep trying, like a send would
                await asyncio.sleep(0.5)


def _all_topic_names() -> list[str]:
    return [name for topic in REGISTRY.topics for name in (topic.name, *topic.retry_topics, topic.dead_letter_topic)]


async def _end_offsets(bootstrap: str, names: list[str]) -> dict:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(n, p) for n in names for p in (consumer.partitions_for_topic(n) or await _partitions(consumer, n))]
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def _partition_states(port: int, topic: str, timeout_s: float = 3.0) -> dict[int, dict] | None:
    """partition → {leader, replicas, isr} of `topic` as the node on `port` alone sees it; None when it does not answer.
    One connection to that node, not an admin client: one of those may send its request to the node that is down, and
    wait out its request timeout (40 s)."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    try:
        connection = await asyncio.wait_for(create_conn("127.0.0.1", port, request_timeout_ms=int(timeout_s * 1000)), timeout_s)
    except Exception:
        return None
    try:
        answer = (await asyncio.wait_for(connection.send(MetadataRequest([topic], False)), timeout_s)).to_object()
    except Exception:
        return None
    finally:
        connection.close()
    return {p["partition"]: {"leader": p["leader"], "replicas": sorted(p["replicas"]), "isr": sorted(p["isr"])}
            for t in answer["topics"] if t["topic"] == topic for p in t["partitions"]}


async def _partitions(consumer, name: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(name) or set()


async def _read_all(bootstrap: str, names: list[str]) -> list:
    """Every record of the topics, from the beginning to the end offsets of now."""
    from aiokafka import AIOKafkaConsumer

    ends = await _end_offsets(bootstrap, names)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        starts = await consumer.beginning_offsets(list(ends))
        return [r async for batch in read_spans(consumer, {tp: (starts[tp], end) for tp, end in ends.items()}) for r in batch]
    finally:
        await consumer.stop()


def _wire_event(record) -> WireEvent:
    headers = dict(record.headers)
    return WireEvent(record.topic, record.partition, record.offset, (record.key or b"").decode(), headers.get("ce_id", b"").decode())


def _dead_letter(record) -> tuple[str, int, int, str, str]:
    headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
    return (headers.get("dlq-original-topic", ""), int(headers.get("dlq-original-partition", -1)),
            int(headers.get("dlq-original-offset", -1)), headers.get("dlq-group", ""), headers.get("dlq-reason", ""))
