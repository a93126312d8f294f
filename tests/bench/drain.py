"""Case 7a: one `payments` replica drains a backlog of signed orders, against case 2's raw relay on the same records (7b).

The bench prefills `orders.placed.v1` (the registry's topic, on the bench's own broker) once with N signed orders. Each
run starts `fleet run payments` with its defaults, a fresh consumer group and a fresh SQLite store, and watches it from
outside: events/s is N / (the first order handled, from its log → the group's commits cover all N and every outcome is
on the broker)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from contracts import REGISTRY, OrderPlaced

from .cases import CaseFailed, RunContext

__all__ = ["DRAIN_ORDERS", "OUTCOME_TOPICS", "PaymentsDrain", "committed_total", "cpu_at", "drain_figures", "first_handled_s"]

DRAIN_ORDERS = 10_000  # make bench --drain-orders; never more than --events
# Where the prefill writes its orders: the current version of the order event (the demo's orders are OrderPlacedV2).
ORDERS = REGISTRY.current(REGISTRY.of(OrderPlaced)).name
OUTCOME_TOPICS = ("payments.authorized.v1", "payments.declined.v1")
POLL_S = 0.025  # how often the watcher asks for the group's commits (and reads the replica's CPU from /proc)
STOP_GRACE_S = 30.0


# ---- pure figures ------------------------------------------------------------------------------------------------

def first_handled_s(lines: Iterable[str]) -> float | None:
    """When the replica handled its first event: the `timestamp` (UTC, ISO 8601, as seconds since the epoch) of the first
    `event_handled` line of its JSON log; None if it handled none. Other lines (text, start-up) are skipped."""
    for line in lines:
        if '"event_handled"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "event_handled" and entry.get("timestamp"):
            return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
    return None


def committed_total(offsets: Mapping, topic: str) -> int:
    """What a group's committed offsets on `topic` add up to (its partitions start at 0 on the bench's fresh broker);
    `offsets` maps TopicPartition (or (topic, partition)) to an offset, or to aiokafka's OffsetAndMetadata."""
    total = 0
    for tp, meta in offsets.items():
        offset = getattr(meta, "offset", meta)
        if tp[0] == topic and offset > 0:
            total += offset
    return total


def cpu_at(samples: Sequence[tuple[float, float]], when_s: float) -> float:
    """The CPU seconds of the last (wall time, CPU seconds) sample taken at or before `when_s`; the first if none was."""
    if not samples:
        raise ValueError("no CPU samples")
    before = [cpu for at, cpu in samples if at <= when_s]
    return before[-1] if before else samples[0][1]


def drain_figures(events: int, first_s: float, done_s: float, cpu_first_s: float, cpu_done_s: float) -> dict:
    """events/s over first handled → done, and the replica's CPU µs per event inside that window."""
    window = done_s - first_s
    if window <= 0:
        raise ValueError(f"the drain ended {window:.3f} s after it began")
    cpu = cpu_done_s - cpu_first_s
    return {"events": events, "window_s": window, "events_per_s": events / window, "cpu_window_s": cpu,
            "cpu_us_per_event": cpu / events * 1e6}


# ---- the run -----------------------------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    from .flow import cpu_seconds

    return cpu_seconds(pid)


def _exited(pid: int) -> bool:
    """Whether the child has exited (a zombie until _stop reaps it: Popen.poll would reap it, and wait4 its usage)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return text[text.rindex(")") + 2:].split()[0] in ("Z", "X")


async def _outcomes_on_broker(consumer, partitions) -> int:
    return sum((await consumer.end_offsets(partitions)).values())


async def _watch(bootstrap: str, group: str, events: int, process: subprocess.Popen, timeout_s: float,
                 outcomes_before: int | None = None) -> tuple[float, list[tuple[float, float]], int, int | None]:
    """Polls the group's commits until they cover `events` and as many outcomes are on the broker; samples the replica's
    CPU meanwhile. Returns (when done, wall s), the CPU samples, the outcomes counted and its peak RSS so far (KiB)."""
    from .cases import vm_hwm_kib

    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from fleet.ops.topics import partitions_of

    counts = await partitions_of(bootstrap, list(OUTCOME_TOPICS))
    partitions = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
    if not partitions:
        raise CaseFailed(f"the outcome topics {OUTCOME_TOPICS} have no partitions: are the registry's topics applied?")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-drain-watch")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="bench-drain-watch")
    await admin.start()
    await consumer.start()
    try:
        before = outcomes_before if outcomes_before is not None else await _outcomes_on_broker(consumer, partitions)
        samples: list[tuple[float, float]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _exited(process.pid):
                raise CaseFailed(f"payments exited before it drained {events} orders")
            samples.append((time.time(), _cpu_seconds(process.pid)))
            try:
                committed = committed_total(await admin.list_consumer_group_offsets(group), ORDERS)
            except KafkaError:
                committed = 0  # the group is not there yet
            if committed >= events:
                outcomes = await _outcomes_on_broker(consumer, partitions) - before
                if outcomes >= events:
                    done = time.time()
                    samples.append((done, _cpu_seconds(process.pid)))
                    return done, samples, outcomes, vm_hwm_kib(process.pid)
            await asyncio.sleep(POLL_S)
        raise CaseFailed(f"payments did not drain {events} orders within {timeout_s:.0f} s")
    finally:
        await consumer.stop()
        await admin.close()


def _stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> tuple[int, float, int]:
    """SIGTERM, SIGKILL after the grace period; reaped with wait4: (exit code, CPU seconds of its life, peak RSS KiB)."""
    if not _exited(process.pid):
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while True:
        found, status, usage = os.wait4(process.pid, os.WNOHANG)
        if found:
            process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not reap it again
            return process.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss
        if time.monotonic() > deadline:
            process.send_signal(signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)


@dataclass(frozen=True)
class PaymentsDrain:
    """One `payments` replica (`python -m fleet run payments`, its defaults: Ed25519, one record at a time, a SQLite
    store) in a fresh consumer group and with a fresh store drains the N signed orders prefilled on orders.placed.v1;
    events/s = N / (its first event_handled log line → the group's commits cover all N and N outcomes are on
    payments.authorized/declined.v1), watched from outside every 25 ms; CPU µs/event from /proc inside that window."""

    key: str = "payments_drain"
    number: str = "7a"
    title: str = "One payments replica draining a backlog of signed orders"
    phase: str = "relay"

    def run(self, ctx: RunContext) -> dict:
        events, keys = ctx.drain_orders, ctx.keys.get("fleet")
        if not events or keys is None:
            raise CaseFailed("no signed orders were prefilled for the drain (tests.bench prefills them when the case is selected)")
        group = f"bench-payments-drain-{ctx.run}-{time.time_ns()}"
        log = ctx.work / f"{self.key}-{ctx.run}.log"
        store = ctx.work / f"{self.key}-{ctx.run}.db"
        for stale in (store, store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm")):
            stale.unlink(missing_ok=True)
        env = {**os.environ, "FLEET_KAFKA_BOOTSTRAP_SERVERS": ctx.bootstrap, "FLEET_KEYS_DIR": str(keys),
               # the prefill is minutes old by the last run, as the relays' (the check still runs on every record)
               "FLEET_KEYS_WINDOW_S": "3600", "FLEET_LOG_FORMAT": "json", "FLEET_LOG_LEVEL": "INFO",
               "FLEET_REPLICA_ID": f"payments-drain-{ctx.run}", "PAYMENTS_GROUP_ID": group,
               "PAYMENTS_STORE_URL": f"sqlite:///{store}", "PAYMENTS_HTTP_PORT": "0"}
        log.parent.mkdir(parents=True, exist_ok=True)
        began = time.time()
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "fleet", "run", "payments"], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env)
        try:
            done_s, samples, outcomes, hwm_kib = asyncio.run(_watch(ctx.bootstrap, group, events, process,
                                                                    timeout_s=120 + events / 25))
        except CaseFailed as failed:
            raise CaseFailed(f"{failed} (log {log}):\n{log.read_text(errors='replace')[-3000:]}") from None
        finally:
            code, process_cpu_s, maxrss_kib = _stop(process)
        with log.open(errors="replace") as lines:
            first_s = first_handled_s(lines)
        if first_s is None:
            raise CaseFailed(f"payments logged no event_handled line (log {log})")
        text = log.read_text(errors="replace")
        return {
            **drain_figures(events, first_s, done_s, cpu_at(samples, first_s), samples[-1][1]),
            "outcomes": outcomes, "start_to_first_s": first_s - began, "exit_code": code,
            "process_cpu_s": process_cpu_s, "process_cpu_us_per_event": process_cpu_s / events * 1e6,
            # VmHWM once it drained (wait4's ru_maxrss would be the bench's own size: see cases._process_figures)
            "peak_rss_mib": (hwm_kib or maxrss_kib) / 1024, "peak_rss_mb": (hwm_kib or maxrss_kib) * 1024 / 1e6,
            "wait4_maxrss_mib": maxrss_kib / 1024,
            "handled": text.count('"event_handled"'), "failed": text.count('"event_failed"'),
            "group": group, "store": "sqlite (fresh per run)", "log": str(log),
            "end": "the group's commits cover all N and N outcomes are on payments.authorized/declined.v1 (polled every 25 ms)",
        }
