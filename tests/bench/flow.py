"""Case 5: the whole order flow on a real fleet: its capacity on a burst of orders (5a), and its latency and CPU per
order at a steady rate (5b), from each order placed to its terminal outcome; the fleet's CPU at rest."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import shutil
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from tests.support.kafka import commit_at_end, groups_have_members, topics_have_leaders
from tests.support.waiting import eventually

from .cases import CaseFailed, RunContext

__all__ = [
    "DEFAULT_RATE_PER_S", "FlowLatency", "FlowSaturated", "burst_capacity_per_s", "busy_pct", "cores_used",
    "cpu_jiffies_of_proc_stat", "cpu_ms_per_order_by_service", "cpu_ticks_of_stat", "due_times", "fleet_groups",
    "group_lag", "hop_latencies", "latency_summary", "order_count", "pair_latencies", "percentile", "span_s", "template_of",
    "terminal_outcomes", "throughput_per_s", "told_stamps", "vm_hwm_kib_of_status", "worker_figures",
]

DEFAULT_RATE_PER_S = 250.0  # the steady rate of issue 17 (make bench --steady-rate)
BURST_ORDERS = 5_000  # the burst of issue 17 (make bench --burst-orders)
WINDOW_S = 20.0  # the measured orders span about this long at the target rate
WARMUP_ORDERS = 50
PLENTY = 1_000_000  # units of every product: no order is ever short, so each one ships
FLOW_SERVICES = ("payments", "inventory", "shipping")  # the path from an order to its shipment
# The hops whose broker timestamps the collector reads, in flow order: each hop is one service's share of the latency.
HOP_TOPICS = ("payments.authorized.v1", "inventory.reserved.v1", "shipments.scheduled.v1")
HOPS = (("payments", "orders.placed.v1", "payments.authorized.v1"),
        ("inventory", "payments.authorized.v1", "inventory.reserved.v1"),
        ("shipping", "inventory.reserved.v1", "shipments.scheduled.v1"))
SHIPMENTS = "shipments.scheduled.v1"
ORDERS = "orders.placed.v1"
NOTIFICATIONS = "notifications.sent.v1"
# An order's terminal outcome: the first record of it on one of these topics, after which the flow decides nothing more
# about it; with the bench's orders (payable, in stock) it is always the shipment. Each maps to the notification
# template that tells the customer of it (services/notifications/core.py).
TERMINAL_TOPICS = {SHIPMENTS: "shipment_scheduled", "payments.declined.v1": "payment_declined",
                   "inventory.backordered.v1": "order_backordered"}
TEMPLATES = (*TERMINAL_TOPICS.values(), "payment_authorized")
COLLECTED_TOPICS = (*HOP_TOPICS, *(t for t in TERMINAL_TOPICS if t not in HOP_TOPICS), NOTIFICATIONS)
LOG_APPEND_TIME = 1  # aiokafka's timestamp_type for a broker-stamped record
SATURATED_BELOW = 0.9  # shipped/s under this share of the order rate: the fleet did not keep up
SHIPPED_WITHIN_S = 60.0  # after the last send: an order not shipped by then counts as lost (or the fleet is saturated)
PROBE_SHIPPED_WITHIN_S = 15.0  # a probe only needs to see the queue grow: its capacity is what shipped meanwhile
BURST_BASE_S = 60.0  # a burst's orders reach their terminal outcome within this + BURST_PER_ORDER_S each, or are lost
BURST_PER_ORDER_S = 1 / 25  # 5 000 orders: 260 s, twice what the slowest fleet measured so far needs
FOLLOW_UPS_WITHIN_S = 120.0  # after the last terminal outcome: notifications told, every group committed (settled)


class FlowSaturated(CaseFailed):
    """Orders still without a shipment when the wait ended; `figures` holds what was measured of the shipped ones."""

    def __init__(self, message: str, figures: dict) -> None:
        super().__init__(message)
        self.figures = figures


# ---- pure figures ------------------------------------------------------------------------------------------------

def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank on sorted values: the smallest value with at least q % of the values at or below it (no interpolation,
    so p99 of 4000 samples is the 3960th, a value that really occurred)."""
    if not ordered:
        raise ValueError("no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is outside (0, 100]")
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def latency_summary(values_ms: Iterable[float]) -> dict:
    """count, min, p50, p90, p99, max and mean of a set of latencies in ms (nearest-rank percentiles)."""
    ordered = sorted(values_ms)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "min_ms": ordered[0], "p50_ms": percentile(ordered, 50), "p90_ms": percentile(ordered, 90),
            "p99_ms": percentile(ordered, 99), "max_ms": ordered[-1], "mean_ms": sum(ordered) / len(ordered)}


def order_count(rate_per_s: float, events: int, window_s: float = WINDOW_S) -> int:
    """Orders to send: enough for `window_s` at the rate, never more than the bench's event count."""
    return max(1, min(events, round(rate_per_s * window_s)))


def due_times(count: int, rate_per_s: float, t0: float) -> list[float]:
    """An open-loop schedule: order i is due at t0 + i / rate, whatever happened to the orders before it."""
    if rate_per_s <= 0:
        raise ValueError("the rate must be positive")
    return [t0 + i / rate_per_s for i in range(count)]


def throughput_per_s(stamps_ms: Iterable[float]) -> float | None:
    """Events per second between the first and the last of a set of timestamps (ms); None for fewer than two."""
    ordered = sorted(stamps_ms)
    span_s = (ordered[-1] - ordered[0]) / 1000 if len(ordered) > 1 else 0.0
    return (len(ordered) - 1) / span_s if span_s else None


def pair_latencies(starts_ms: Mapping[str, float], ends_ms: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
    """end − start per order that has both; the orders still without an end. Ends of unknown orders (a warm-up's,
    an earlier run's) are ignored."""
    paired = {order_id: ends_ms[order_id] - start for order_id, start in starts_ms.items() if order_id in ends_ms}
    missing = sorted(order_id for order_id in starts_ms if order_id not in ends_ms)
    return paired, missing


def hop_latencies(stamps: Mapping[str, Mapping[str, float]], order_ids: Iterable[str]) -> dict[str, dict]:
    """Per service on the path, the gap between the broker timestamps of the record it consumed and the one it caused."""
    hops = {}
    for service, source, sink in HOPS:
        starts = {o: stamps.get(source, {})[o] for o in order_ids if o in stamps.get(source, {})}
        hops[service] = latency_summary(pair_latencies(starts, stamps.get(sink, {}))[0].values())
    return hops


def cpu_ticks_of_stat(text: str) -> int:
    """utime + stime (clock ticks) from /proc/<pid>/stat; the command name may hold spaces and parentheses, so the
    fields are counted from the last ')'."""
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5); fields[0] is field 3 (state)


def vm_hwm_kib_of_status(text: str) -> int | None:
    """The peak resident set (VmHWM, kB) from /proc/<pid>/status; None for a process that has none (a zombie)."""
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def cpu_jiffies_of_proc_stat(text: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat's `cpu` line; idle and iowait count as not busy."""
    values = [int(v) for v in next(line for line in text.splitlines() if line.startswith("cpu ")).split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])  # guest time is already inside user and nice
    return total - idle, total


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The machine's CPU use between two /proc/stat readings, in % of all its CPUs."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total * 100 if total else 0.0


def worker_figures(cpu_before_s: Mapping[str, float], cpu_after_s: Mapping[str, float], peak_rss_kib: Mapping[str, int | None],
                   orders: int, idle_cpu_pct: Mapping[str, float] | None = None) -> dict:
    """Per worker process: CPU seconds in the window, CPU µs per order, peak RSS; plus the sums the report headlines."""
    workers = {}
    for name in cpu_after_s:
        cpu = cpu_after_s[name] - cpu_before_s[name]
        rss = peak_rss_kib.get(name)
        workers[name] = {"cpu_s": cpu, "cpu_us_per_order": cpu / orders * 1e6,
                         "peak_rss_mib": rss / 1024 if rss is not None else None}
        if idle_cpu_pct is not None:
            workers[name]["idle_cpu_pct"] = idle_cpu_pct.get(name)
    total = sum(w["cpu_s"] for w in workers.values())
    peaks = [w["peak_rss_mib"] for w in workers.values() if w["peak_rss_mib"] is not None]
    by_service = cpu_ms_per_order_by_service(workers)
    return {"workers": workers, "workers_cpu_s": total, "cpu_us_per_event": total / orders * 1e6,
            "max_worker_peak_rss_mib": max(peaks) if peaks else None,
            # /proc's kB are KiB; the target is in MB (10^6 bytes)
            "max_worker_peak_rss_mb": max(peaks) * 1024 * 1024 / 1e6 if peaks else None,
            "cpu_ms_per_order": by_service, **{f"cpu_ms_per_order_{s}": ms for s, ms in by_service.items()},
            "max_worker_cpu_ms_per_order": max(by_service.values()) if by_service else None}


def terminal_outcomes(stamps: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[str, float]]:
    """Per order, its terminal outcome: (topic, broker timestamp ms) of its earliest record on a TERMINAL_TOPICS topic."""
    found: dict[str, tuple[str, float]] = {}
    for topic in TERMINAL_TOPICS:
        for order_id, stamp in stamps.get(topic, {}).items():
            if order_id not in found or stamp < found[order_id][1]:
                found[order_id] = (topic, stamp)
    return found


def template_of(value: bytes) -> str | None:
    """The notification template a notifications.sent.v1 value names (its JSON holds it), None for none known."""
    return next((t for t in TEMPLATES if t.encode() in value), None)


def told_stamps(terminals: Mapping[str, tuple[str, float]], told: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Per order with a terminal outcome, when the customer was told of that outcome: the broker timestamp of its
    notification with the outcome's template (`told`: template → order → ms); orders not told yet are left out."""
    stamps = {}
    for order_id, (topic, _) in terminals.items():
        if (stamp := told.get(TERMINAL_TOPICS[topic], {}).get(order_id)) is not None:
            stamps[order_id] = stamp
    return stamps


def span_s(starts_ms: Iterable[float], ends_ms: Iterable[float]) -> float | None:
    """Seconds from the earliest start to the latest end; None without both."""
    starts, ends = list(starts_ms), list(ends_ms)
    return (max(ends) - min(starts)) / 1000 if starts and ends else None


def burst_capacity_per_s(placed_ms: Mapping[str, float], done_ms: Mapping[str, float]) -> float | None:
    """A burst's capacity: the orders that reached their end, per second from the first order placed to the last
    order's end (broker timestamps, ms). Lost orders are not counted (the case reports them apart)."""
    done = [order_id for order_id in placed_ms if order_id in done_ms]
    seconds = span_s(placed_ms.values(), (done_ms[o] for o in done))
    return len(done) / seconds if done and seconds and seconds > 0 else None


def cores_used(cpu_before_s: Mapping[str, float], cpu_after_s: Mapping[str, float], seconds: float) -> float:
    """CPU cores the processes used between two readings, summed: CPU seconds / wall seconds (0.02 = 2 % of one core)."""
    if seconds <= 0:
        raise ValueError("the window must last")
    return sum(cpu_after_s[name] - cpu_before_s[name] for name in cpu_after_s if name in cpu_before_s) / seconds


def cpu_ms_per_order_by_service(workers: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """CPU ms per order of each service, from worker_figures' per-replica figures (`payments-1`, `payments-2` add up)."""
    by_service: dict[str, float] = {}
    for name, figures in workers.items():
        service = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
        by_service[service] = by_service.get(service, 0.0) + figures["cpu_us_per_order"] / 1000
    return by_service


# ---- /proc -------------------------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    return cpu_ticks_of_stat(Path(f"/proc/{pid}/stat").read_text()) / CLOCK_TICKS


def peak_rss_kib(pid: int) -> int | None:
    return vm_hwm_kib_of_status(Path(f"/proc/{pid}/status").read_text())


def machine_jiffies() -> tuple[int, int]:
    return cpu_jiffies_of_proc_stat(Path("/proc/stat").read_text())


class GroupLag:
    """What consumer groups have yet to commit of their topics (end offset − committed offset, summed), asked again and
    again over the same two clients."""

    def __init__(self, bootstrap: str, groups: Mapping[str, Sequence[str]]) -> None:
        self.bootstrap, self.groups = bootstrap, {g: list(ts) for g, ts in groups.items()}
        self._admin = self._consumer = None
        self._partitions: dict[str, list] = {}

    async def __aenter__(self) -> GroupLag:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        from fleet.ops.topics import partitions_of

        counts = await partitions_of(self.bootstrap, sorted({t for ts in self.groups.values() for t in ts}))
        self._partitions = {g: [TopicPartition(t, p) for t in ts for p in range(counts.get(t, 0))] for g, ts in self.groups.items()}
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench-flow-lag")
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, client_id="bench-flow-lag")
        await self._admin.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await asyncio.gather(self._consumer.stop(), self._admin.close(), return_exceptions=True)

    async def total(self) -> int:
        ends = await self._consumer.end_offsets([tp for tps in self._partitions.values() for tp in tps])
        total = 0
        for group, tps in self._partitions.items():
            committed = {tp: meta.offset for tp, meta in (await self._admin.list_consumer_group_offsets(group, partitions=tps)).items()}
            total += group_lag({tp: ends[tp] for tp in tps}, committed)
        return total


def group_lag(ends: Mapping, committed: Mapping) -> int:
    """Records a group has yet to commit: per partition, its end − the group's committed offset (never committed, -1
    or missing: all of it), summed; a commit past the end (the topic was recreated) counts as none to go."""
    return sum(max(0, end - max(0, committed.get(tp, 0))) for tp, end in ends.items())


# ---- the orders --------------------------------------------------------------------------------------------------

def authorized_orders(count: int, tag: str, seed: int = 5) -> list:
    """Demo orders that payments' own rules authorize (so each leads to exactly one shipment), with ids unique to the run."""
    from contracts import PaymentAuthorized
    from fleet.ops.demo import demo_orders
    from services.payments import core as payments_core
    from services.payments.settings import PaymentsSettings

    policy = PaymentsSettings(_env_file=None).credit_policy()
    now = datetime.now(timezone.utc)
    kept, candidates = [], demo_orders(count * 3 + 100, seed=seed, now=now)
    for order in candidates:
        if isinstance(payments_core.decide(order, policy, now), PaymentAuthorized):
            kept.append(order.model_copy(update={"order_id": f"ord-{tag}-{len(kept):06d}"}))
            if len(kept) == count:
                return kept
    raise RuntimeError(f"only {len(kept)} of {count} demo orders are authorized")  # demo_orders authorizes most


# ---- the run -----------------------------------------------------------------------------------------------------

class Collector:
    """Reads the flow's topics from their ends of now; keeps, per topic and order, the broker's LogAppendTime (ms) of
    the order's first record there, and per notification template, when each order's notification landed."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.stamps: dict[str, dict[str, float]] = {t: {} for t in COLLECTED_TOPICS}
        self.told: dict[str, dict[str, float]] = {t: {} for t in TEMPLATES}  # template → order → ms
        self.not_log_append = 0  # records stamped by the producer's clock: the topic's config is not the registry's
        self._consumer = None
        self._task: asyncio.Task | None = None
        self._arrived = asyncio.Event()

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, client_id="bench-flow")
        await self._consumer.start()
        partitions = [TopicPartition(t, p) for t in COLLECTED_TOPICS for p in await self._partitions(t)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)  # resolves the end now, before any order is sent
        self._task = asyncio.create_task(self._read())

    async def _partitions(self, topic: str) -> set[int]:
        for _ in range(50):
            found = self._consumer.partitions_for_topic(topic)
            if found:
                return found
            await self._consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise CaseFailed(f"topic {topic} has no partitions on {self.bootstrap}")

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if record.timestamp_type != LOG_APPEND_TIME:
                        self.not_log_append += 1
                    order_id = (record.key or b"").decode()
                    self.stamps[record.topic].setdefault(order_id, float(record.timestamp))
                    if record.topic == NOTIFICATIONS and (template := template_of(record.value or b"")):
                        self.told[template].setdefault(order_id, float(record.timestamp))
            if batches:
                self._arrived.set()

    def terminals(self) -> dict[str, tuple[str, float]]:
        return terminal_outcomes(self.stamps)

    def told_of_terminal(self) -> dict[str, float]:
        return told_stamps(self.terminals(), self.told)

    async def until_terminal(self, order_ids: Iterable[str], timeout_s: float) -> list[str]:
        """Waits until every order has its terminal outcome or the time is up; returns the orders still without one."""
        return await self._until(order_ids, self.terminals, timeout_s)

    async def until_told(self, order_ids: Iterable[str], timeout_s: float) -> list[str]:
        """Waits until every order's customer was told of its terminal outcome; returns the orders not told yet."""
        return await self._until(order_ids, self.told_of_terminal, timeout_s)

    async def _until(self, order_ids: Iterable[str], have, timeout_s: float) -> list[str]:
        wanted = set(order_ids)
        deadline = time.monotonic() + timeout_s
        while True:
            self._arrived.clear()  # before looking: a batch read after the look sets it again, none is missed
            missing = wanted - have().keys()
            if not missing or time.monotonic() >= deadline:
                return sorted(missing)
            try:
                await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                pass
            # At most ten looks a second: each one goes over every order, on the CPUs the workers use. The figures come
            # from the broker's timestamps, so a late look only ends the wait later.
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


@dataclass
class Sent:
    """What the sender knows of each order: when it was due and sent (time.time(), s), and its broker LogAppendTime (ms)."""

    due_s: dict[str, float] = field(default_factory=dict)
    sent_s: dict[str, float] = field(default_factory=dict)
    appended_ms: dict[str, float] = field(default_factory=dict)
    not_log_append: int = 0


class OrderSender:
    """Plays the storefront: each order encoded and signed with its key at its due time, sent without waiting for the
    one before (acks=all, idempotent, as contracts.Publisher); the ack's timestamp is the order's LogAppendTime."""

    def __init__(self, bootstrap: str, keys_dir: Path) -> None:
        from aiokafka import AIOKafkaProducer

        from fleet.runtime.keys import KeyStore

        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="storefront", acks="all", enable_idempotence=True)
        self._keys_dir = keys_dir
        self._storefront = KeyStore.for_signer(keys_dir, "storefront").signer()

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def stock(self, skus: Iterable[str], tag: str) -> None:
        """One delivery of PLENTY units of each product, signed by the warehouse, acknowledged before this returns."""
        from contracts import StockReceived, encode, source_of
        from fleet.runtime.keys import KeyStore

        warehouse = KeyStore.for_signer(self._keys_dir, "warehouse").signer()
        now = datetime.now(timezone.utc)
        deliveries = []
        for n, sku in enumerate(sorted(skus)):
            receipt = StockReceived(receipt_id=f"rcpt-{tag}-{n:03d}", sku=sku, quantity=PLENTY, received_at=now)
            deliveries.append(await self._send(encode(receipt, source=source_of("warehouse"), signer=warehouse)))
        await asyncio.gather(*deliveries)

    async def open_loop(self, orders: list, rate_per_s: float) -> Sent:
        """Sends order i at t0 + i / rate (monotonic clock); returns once the broker acknowledged every one."""
        from contracts import encode, source_of

        sent, loop, acks = Sent(), asyncio.get_running_loop(), []
        to_wall = time.time() - loop.time()  # the schedule runs on the monotonic clock; its due times are kept as wall time
        for order, due in zip(orders, due_times(len(orders), rate_per_s, loop.time() + 0.05)):
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            record = encode(order, source=source_of("storefront"), signer=self._storefront)
            sent.due_s[order.order_id] = due + to_wall
            sent.sent_s[order.order_id] = time.time()
            ack = await self._send(record)
            ack.add_done_callback(lambda done, order_id=order.order_id: self._acked(sent, order_id, done))
            acks.append(ack)
        await asyncio.gather(*acks)
        return sent

    def signed(self, orders: list) -> list:
        """The orders encoded and signed now (before a burst's window: the storefront's signing is not the fleet's work)."""
        from contracts import encode, source_of

        return [encode(order, source=source_of("storefront"), signer=self._storefront) for order in orders]

    async def burst(self, records: list) -> Sent:
        """Sends every record at once, as fast as the producer takes them; returns once the broker acknowledged every one."""
        sent, acks = Sent(), []
        for record in records:
            order_id = record.key
            sent.due_s[order_id] = sent.sent_s[order_id] = time.time()
            ack = await self._send(record)
            ack.add_done_callback(lambda done, order_id=order_id: self._acked(sent, order_id, done))
            acks.append(ack)
        await asyncio.gather(*acks)
        return sent

    @staticmethod
    def _acked(sent: Sent, order_id: str, done: asyncio.Future) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # gather() raises it
        metadata = done.result()
        if metadata.timestamp_type != LOG_APPEND_TIME:
            sent.not_log_append += 1
        sent.appended_ms[order_id] = float(metadata.timestamp)

    async def _send(self, record) -> asyncio.Future:
        return await self._producer.send(record.topic, value=record.value, key=record.key.encode("utf-8"),
                                         headers=record.raw_headers())


def fleet_groups(services: Iterable[str], group_of, registry) -> dict[str, list[str]]:
    """Each worker's consumer group and its retry tiers' groups (`<group>.retry.<n>`), with the topics each reads."""
    groups: dict[str, list[str]] = {}
    for service in services:
        topics, group = registry.consumed_in_group_by(service), group_of(service)
        groups[group] = [t.name for t in topics]
        for tier in range(1, len(topics[0].retry_topics) + 1 if topics else 1):
            groups[f"{group}.retry.{tier}"] = [t.retry_topic(tier) for t in topics]
    return groups


def worker_env(bootstrap: str, work: Path, services: Sequence[str], run: int) -> dict[str, str]:
    """What the workers read besides the fleet's defaults: the broker, keys, a fresh store each, the mail feed, logging.
    HTTP ports are left to the system (0): the bench must not collide with a fleet already on 8101..."""
    env = {"FLEET_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "FLEET_KEYS_DIR": str(work / "keys"), "FLEET_LOG_LEVEL": "INFO",
           "NOTIFICATIONS_OUTBOX_PATH": str(work / "mail-feed.jsonl")}
    for service in services:
        env[f"{service.upper()}_STORE_URL"] = f"sqlite:///{work / f'{service}-{run}.db'}"
        env[f"{service.upper()}_HTTP_PORT"] = "0"
    return env


class FlowRun:
    """One repetition: topics, keys, the workers under a Supervisor, stock, a warm-up, the measured orders, the figures."""

    def __init__(self, bootstrap: str, work: Path, run: int, rate_per_s: float | None, orders: int, services: Sequence[str],
                 extra_env: dict[str, str] | None = None, shipped_within_s: float = SHIPPED_WITHIN_S, idle_s: float = 2.0) -> None:
        """`rate_per_s` None: a burst, every order sent at once (its wait for the terminal outcomes grows with its size)."""
        self.bootstrap, self.work, self.run, self.rate_per_s, self.orders = bootstrap, work, run, rate_per_s, orders
        self.services, self.extra_env = list(services), extra_env or {}
        self.shipped_within_s = shipped_within_s if rate_per_s else BURST_BASE_S + orders * BURST_PER_ORDER_S
        self.idle_s = idle_s
        self.tag = f"b5r{run}{uuid.uuid4().hex[:6]}"
        self.supervisor = None

    async def measure(self) -> dict:
        from fleet.ops.supervisor import Supervisor

        began = time.perf_counter()
        await self._prepare()
        self.supervisor = Supervisor(self.services, state_dir=self.work, grace_s=30.0,
                                     env={**worker_env(self.bootstrap, self.work, self.services, self.run), **self.extra_env})
        collector, sender = Collector(self.bootstrap), OrderSender(self.bootstrap, self.work / "keys")
        try:
            await self.supervisor.start()
            await self._until_groups_have_members()
            await collector.start()
            await sender.start()
            return await self._flow(collector, sender, began)
        finally:
            await asyncio.gather(sender.stop(), collector.stop(), return_exceptions=True)
            await self.supervisor.stop()

    async def _prepare(self) -> None:
        from fleet.runtime.keys import UPSTREAM_SIGNERS, init_keys
        from fleet.ops.topics import apply_topics
        from fleet.catalog import WORKERS

        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        init_keys(self.work / "keys", [*WORKERS, *UPSTREAM_SIGNERS])
        # Replication factor 1 on the bench's one broker, so min.insync.replicas is 1: acks=all waits for that one.
        await apply_topics(self.bootstrap, replication_factor=1)
        await self._until_leaders()
        await self._start_at_the_ends()

    async def _flow(self, collector: Collector, sender: OrderSender, began: float) -> dict:
        from fleet.ops.demo import CATALOGUE

        orders = authorized_orders(WARMUP_ORDERS + self.orders, self.tag)
        warmup, measured = orders[:WARMUP_ORDERS], orders[WARMUP_ORDERS:]
        await sender.stock(CATALOGUE, self.tag)
        await self._until_stocked(CATALOGUE)
        await sender.open_loop(warmup, min(self.rate_per_s or 50.0, 50.0))
        if lost := await collector.until_terminal([o.order_id for o in warmup], 60.0):
            raise CaseFailed(f"warm-up: {len(lost)} of {len(warmup)} orders never shipped (logs in {self.work / 'logs'})")
        warmup_settled = await self._until_settled()
        idle = await self._idle_cpu_pct(self.idle_s)  # the fleet at rest, start-up and warm-up behind it
        records = sender.signed(measured) if self.rate_per_s is None else None
        cpu_before, machine_before, window_began = self._cpu(), machine_jiffies(), time.perf_counter()
        sent = await (sender.burst(records) if records is not None else sender.open_loop(measured, self.rate_per_s))
        last_sent = time.perf_counter()
        lost = await collector.until_terminal(sent.sent_s, self.shipped_within_s)
        shipped_after_s = time.perf_counter() - last_sent
        # The follow-ups: each customer told of the outcome (notifications), then every group committed (the tracker's
        # read model folded every event): their work for these orders falls inside the CPU window.
        untold = await collector.until_told(sent.sent_s, FOLLOW_UPS_WITHIN_S) if not lost else sorted(sent.sent_s)
        settled = await self._until_settled(FOLLOW_UPS_WITHIN_S) if not lost else False
        settled_at_ms = time.time() * 1000 if settled else None
        self._check_alive()  # a restarted replica has a new pid: its CPU and RSS would not be this window's
        cpu_after, window_s = self._cpu(), time.perf_counter() - window_began
        rss = {name: peak_rss_kib(pid) for name, pid in self._pids().items()}
        busy = busy_pct(machine_before, machine_jiffies())  # every process: workers, broker, this one, anything else
        figures = self._figures(sent, collector, cpu_before, cpu_after, rss, idle, lost=lost, untold=untold,
                                settled_at_ms=settled_at_ms, warmup_settled=warmup_settled, window_s=window_s, machine_busy_pct=busy,
                                shipped_after_s=shipped_after_s, settled=settled, took_s=time.perf_counter() - began)
        if lost:
            raise FlowSaturated(self._lost_message(lost, figures), figures)
        return figures

    def _lost_message(self, lost: list[str], figures: dict) -> str:
        if self.rate_per_s is None:
            return (f"{len(lost)} of {figures['orders']} orders of the burst without a terminal outcome {self.shipped_within_s:.0f} s "
                    f"after the last send (logs in {self.work / 'logs'})")
        return (f"{len(lost)} of {figures['orders']} orders without a terminal outcome {self.shipped_within_s:.0f} s after the "
                f"last send: the fleet shipped {figures['shipped_per_s'] or 0:.1f} orders/s for {figures['rate_target_per_s']:.0f}/s "
                f"offered, so it is saturated and the latency of the shipped ones (p50 {figures.get('p50_ms', float('nan')):.0f} ms, "
                f"p99 {figures.get('p99_ms', float('nan')):.0f} ms) only grows with the run's length (logs in {self.work / 'logs'})")

    def _figures(self, sent: Sent, collector: Collector, cpu_before, cpu_after, rss, idle, **clock) -> dict:
        terminals = collector.terminals()
        ends = {order_id: stamp for order_id, (_, stamp) in terminals.items()}
        told = collector.told_of_terminal()
        from_append, _ = pair_latencies(sent.appended_ms, ends)
        from_send, _ = pair_latencies({o: s * 1000 for o, s in sent.sent_s.items()}, ends)
        from_due, _ = pair_latencies({o: s * 1000 for o, s in sent.due_s.items()}, ends)
        headline = latency_summary(from_append.values())
        lateness = latency_summary((sent.sent_s[o] - sent.due_s[o]) * 1000 for o in sent.sent_s)
        stamps = {ORDERS: sent.appended_ms, **collector.stamps}
        # Every order's broker timestamps along the flow, beside the workers' logs: what a slow order's hops were.
        (self.work / "stamps.json").write_text(json.dumps({**stamps, "told": collector.told}))
        mine = [o for o in sent.appended_ms if o in ends]
        outcomes = {topic: sum(1 for o in sent.sent_s if terminals.get(o, ("",))[0] == topic) for topic in TERMINAL_TOPICS}
        lost, untold, settled_at_ms = clock.pop("lost"), clock.pop("untold"), clock.pop("settled_at_ms")
        first_placed = min(sent.appended_ms.values()) if sent.appended_ms else None
        burst = self.rate_per_s is None
        capacity = burst_capacity_per_s(sent.appended_ms, ends)
        figures = {
            # A burst: orders per second from the first placed to the last one's terminal outcome (its capacity).
            # At a rate: the order rate achieved (the sender's), beside shipped_per_s, what the fleet carried.
            "events_per_s": capacity if burst else throughput_per_s(s * 1000 for s in sent.sent_s.values()),
            "mode": "burst" if burst else "steady rate",
            "rate_target_per_s": self.rate_per_s, "orders": len(sent.sent_s), "shipped": outcomes[SHIPMENTS],
            "terminal_outcomes": outcomes, "lost": len(lost), "not_told": len(untold),
            "shipped_per_s": throughput_per_s(ends[o] for o in mine),
            "capacity_per_s": capacity,
            "burst_sent_s": span_s(sent.appended_ms.values(), sent.appended_ms.values()) if burst else None,
            "terminal_after_s": span_s(sent.appended_ms.values(), (ends[o] for o in mine)),
            # From the first order placed to the last customer told, and to every group committed (the tracker included).
            "told_after_s": span_s(sent.appended_ms.values(), (told[o] for o in sent.appended_ms if o in told)) if not untold else None,
            "settled_after_s": (settled_at_ms - first_placed) / 1000 if settled_at_ms and first_placed else None,
            "warmup_orders": WARMUP_ORDERS,
            **{k: v for k, v in headline.items() if k != "count"},
            "latency_from": "order's LogAppendTime → its terminal outcome's LogAppendTime (broker clock, ms); percentiles by nearest rank",
            "terminal_outcome": f"the order's first record on {', '.join(TERMINAL_TOPICS)} (here: its shipment)",
            "from_send": latency_summary(from_send.values()), "from_due": latency_summary(from_due.values()),
            "to_told": latency_summary(pair_latencies(sent.appended_ms, told)[0].values()),
            "send_lateness": lateness, "hops": hop_latencies(stamps, sent.appended_ms),
            **worker_figures(cpu_before, cpu_after, rss, len(sent.sent_s), idle),
            "idle_s": self.idle_s, "fleet_idle_cores": sum(idle.values()) / 100 if idle else None,
            "services": self.services, "worker_env": self.extra_env, "store": "sqlite (one file per service, fresh per run)",
            "records_not_log_append_time": sent.not_log_append + collector.not_log_append,
            # settled false: notifications and the tracker had not caught up when the CPU window closed (a lower bound).
            "evidence": self._evidence(), "settled": clock.pop("settled"), **clock, "work": str(self.work),
        }
        return figures

    def _pids(self) -> dict[str, int]:
        return {r.name: r.process.pid for r in self.supervisor.replicas if r.process is not None}

    def _cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self._pids().items()}

    async def _idle_cpu_pct(self, seconds: float) -> dict[str, float]:
        """Each worker's CPU use while no order flows (polling consumers, relays, heartbeats), in % of one core."""
        if seconds <= 0:
            return {}
        before = self._cpu()
        await asyncio.sleep(seconds)
        after = self._cpu()
        return {name: (after[name] - before[name]) / seconds * 100 for name in after}

    async def _until_leaders(self, timeout_s: float = 30.0) -> None:
        """Until every partition of the fleet's topics has a leader: workers that start earlier only log errors and retry."""
        from aiokafka.admin import AIOKafkaAdminClient

        from fleet.ops.topics import desired_topics

        names = [t.name for t in desired_topics()]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench-flow-topics")
        await admin.start()
        try:
            await eventually(lambda: topics_have_leaders(admin, names), "the fleet's topics to have leaders", timeout_s=timeout_s,
                             every_s=0.2, error=CaseFailed)
        finally:
            await admin.close()

    async def _start_at_the_ends(self) -> None:
        """Commits every group of the workers (and of their retry tiers) at the end of what it consumes: a backlog that
        an earlier run left (a saturated fleet stopped mid-way) must not flow into this run's fresh stores."""
        from contracts import REGISTRY
        from fleet.ops.status import group_of

        for group, names in fleet_groups(self.services, group_of, REGISTRY).items():
            await commit_at_end(self.bootstrap, group, names)

    async def _until_groups_have_members(self, timeout_s: float = 90.0) -> None:
        async def filled():
            self._check_alive()
            return await groups_have_members(self.bootstrap, dict.fromkeys(self.services, 1))

        await eventually(filled, f"the workers' groups to fill (logs in {self.work / 'logs'})", timeout_s=timeout_s, every_s=0.5,
                         error=CaseFailed)

    async def _until_stocked(self, skus: Iterable[str], timeout_s: float = 60.0) -> None:
        """Until inventory's store holds the delivery: orders placed before it would be backordered, never shipped."""
        db, wanted = self.work / f"inventory-{self.run}.db", set(skus)

        def stocked():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0) as connection:
                have = {sku for sku, units in connection.execute("SELECT sku, units FROM stock") if units >= PLENTY}
            return wanted <= have

        await eventually(stocked, f"inventory to take the stock delivery (logs in {self.work / 'logs'})", timeout_s=timeout_s,
                         every_s=0.2, error=CaseFailed, ignoring=(sqlite3.Error,))  # the store or its table is not created yet

    async def _until_settled(self, timeout_s: float = 60.0, every_s: float = 0.25) -> bool:
        """Until every worker's group has committed up to the end of what it consumes (notifications and the tracker
        trail the shipments): their work for these orders then falls inside the CPU window. Two clients for the whole
        wait, a few light requests per look: the look runs on the CPUs the workers need."""
        from contracts import REGISTRY
        from fleet.catalog import group_of

        groups = {group_of(s): [t.name for t in REGISTRY.consumed_in_group_by(s)] for s in self.services}
        async with GroupLag(self.bootstrap, groups) as lag:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if await lag.total() == 0:
                    return True
                await asyncio.sleep(every_s)
        return False

    def _check_alive(self) -> None:
        dead = [r.name for r in self.supervisor.replicas if r.restarts]
        if dead:
            raise CaseFailed(f"worker(s) {dead} crashed (logs in {self.work / 'logs'})")

    def _evidence(self) -> dict:
        """Counts from the workers' JSON logs that explain slow orders: failures, retries, restarts."""
        counts = {}
        for path in sorted((self.work / "logs").glob("*.log")):
            text = path.read_text(errors="replace")
            counts[path.stem] = {"handled": text.count('"event_handled"'), "failed": text.count('"event_failed"'),
                                 "retries_scheduled": text.count('"event_retry_scheduled"'),
                                 "outcomes_not_durable": text.count('"event_outcome_not_durable"')}
        restarts = {r.name: r.restarts for r in self.supervisor.replicas if r.restarts}
        return {"logs": counts, "replica_restarts": restarts}


@dataclass(frozen=True)
class FlowLatency:
    """The whole fleet (payments, inventory, shipping, notifications, tracker), each worker a process of its own under
    fleet.ops.supervisor with the fleet's default settings and a fresh SQLite store; signed orders (payable, in stock)
    sent either on an open-loop schedule at a fixed rate, or all at once (a burst); from each order placed to its
    terminal outcome (broker timestamps), then until its customer is told and every group has committed; each worker's
    CPU per order, and the fleet's CPU at rest before the orders."""

    rate_per_s: float | None = None  # None: DEFAULT_RATE_PER_S (ignored by a burst)
    orders: int | None = None  # None: order_count(rate, ctx.events); a burst: min(BURST_ORDERS, ctx.events)
    services: tuple[str, ...] = ("payments", "inventory", "shipping", "notifications", "tracker")
    worker_env: tuple[tuple[str, str], ...] = ()  # diagnosis only (e.g. a proposed setting); the bench keeps the defaults
    key: str = "end_to_end_latency"
    number: str = "5"
    title: str = "End-to-end latency of the order flow"
    phase: str = "flow"
    probe: bool = False  # True: a saturated fleet is a result (its shipped_per_s is the capacity), not a failure
    window_s: float = WINDOW_S
    once: bool = False  # True: one run whatever --runs says (a probe's figure is its capacity, not a distribution)
    burst: bool = False  # True: every order at once; events_per_s is the capacity (first placed → last terminal outcome)
    idle_s: float = 2.0  # the fleet at rest, measured before the orders (the fleet_idle_cores figure)
    wait_s: float | None = None  # after the last send, for every terminal outcome; None: 15 s for a probe, else 60 s

    def with_rate(self, rate_per_s: float) -> FlowLatency:
        return replace(self, rate_per_s=rate_per_s)

    def run(self, ctx: RunContext) -> dict:
        rate = None if self.burst else self.rate_per_s or DEFAULT_RATE_PER_S
        orders = self.orders or (min(BURST_ORDERS, ctx.events) if self.burst else order_count(rate, ctx.events, self.window_s))
        if missing := set(FLOW_SERVICES) - set(self.services):
            raise CaseFailed(f"the flow needs {sorted(missing)} too")
        flow = FlowRun(ctx.bootstrap, ctx.work / f"{self.key}-{ctx.run}", ctx.run, rate, orders, self.services, dict(self.worker_env),
                       self.wait_s or (PROBE_SHIPPED_WITHIN_S if self.probe else SHIPPED_WITHIN_S), idle_s=self.idle_s)
        try:
            figures = asyncio.run(flow.measure())
            if self.burst:
                return figures
            # Shipping clearly slower than ordering: the queue grew all along, so the latency says only how long the run was.
            return {**figures, "saturated": (figures.get("shipped_per_s") or 0) < SATURATED_BELOW * (figures.get("events_per_s") or 0)}
        except FlowSaturated as saturated:
            if not self.probe:
                raise
            # A probe is there to find out: the fleet's end-to-end capacity is its figure, not a failure.
            return {**saturated.figures, "saturated": True, "why": str(saturated)}


def _context(**values) -> RunContext:
    # Only the fields RunContext has: the bench's other cases add their own (tools_lib, keys) and this case needs none.
    names = {f.name for f in dataclasses.fields(RunContext)}
    return RunContext(**{k: v for k, v in values.items() if k in names})


def _supervisor_lines_to_stderr() -> None:
    # The supervisor logs with structlog's default (stdout): keep stdout for the JSON figures.
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.flow", description=__doc__)
    parser.add_argument("--bootstrap", required=True, help="a running broker (not the bench's while a bench runs)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_PER_S, help="orders per second")
    parser.add_argument("--orders", type=int, help="measured orders (default: rate × 20 s; a burst: 5000)")
    parser.add_argument("--burst", action="store_true", help="send every order at once and measure the capacity (--rate unused)")
    parser.add_argument("--idle-s", type=float, default=2.0, help="seconds of the fleet at rest before the orders (default 2)")
    parser.add_argument("--services", nargs="+", default=list(FlowLatency.services), help="workers to start")
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parents[2] / ".cache" / "bench-flow")
    parser.add_argument("--run", type=int, default=1)
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="diagnosis only: a setting for every worker (e.g. to try a proposed fix)")
    args = parser.parse_args(argv)
    _supervisor_lines_to_stderr()
    extra = tuple(tuple(pair.split("=", 1)) for pair in args.worker_env)
    case = FlowLatency(orders=args.orders, services=tuple(args.services), worker_env=extra, burst=args.burst,
                       idle_s=args.idle_s).with_rate(args.rate)
    ctx = _context(bootstrap=args.bootstrap, events=args.orders or 20_000, run=args.run, work=args.work, tools_lib=Path("."), keys={})
    try:
        figures = case.run(ctx)
    except CaseFailed as failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        if isinstance(failed, FlowSaturated):
            print(json.dumps(failed.figures, indent=2))
        return 1
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
