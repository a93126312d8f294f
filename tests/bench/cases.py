"""The cases: each a small class whose `run` measures one repetition in a process of its own and returns its figures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .events import EVENT_BYTES
from .kafka_tools import parse_producer_performance_steady, producer_performance_args
from .stats import parse_consumer_performance, steady_rate

__all__ = ["Case", "CaseFailed", "ConsumerCeiling", "FleetRelayCase", "ProducerCeiling", "RelayCase", "RunContext", "combine_processes", "run_process", "run_processes",
           "vm_hwm_kib"]

JAVA_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class RunContext:
    """What one repetition of a case gets: the broker, the event count, the run's number and a folder for its files."""

    bootstrap: str
    events: int
    run: int
    work: Path
    tools_lib: Path
    keys: dict[str, Path]  # the eventfleet relay's keys folder per algorithm (FLEET_KEYS_DIR); "fleet": the drain's
    drain_orders: int = 0  # signed orders prefilled on orders.placed.v1 for the drain cases (7a, 7b)


@dataclass(frozen=True)
class ProcessOutcome:
    returncode: int
    wall_s: float
    cpu_s: float  # user + system of the child, from wait4: the whole process, start-up included
    maxrss_kib: int  # wait4's ru_maxrss: on Linux it keeps the size of the process that forked it, so never below ours
    output: str
    vm_hwm_kib: int | None = None  # the child's own peak (VmHWM, /proc), last read before it exited: its peak RSS


def run_process(cmd: list[str], *, log: Path, timeout_s: float, env: dict[str, str] | None = None) -> ProcessOutcome:
    """Runs `cmd` with stdout and stderr in `log`, and reaps it with wait4 for its own rusage (CPU, peak RSS)."""
    return run_processes([cmd], logs=[log], timeout_s=timeout_s, env=env)[0]


def run_processes(cmds: list[list[str]], *, logs: list[Path], timeout_s: float, env: dict[str, str] | None = None) -> list[ProcessOutcome]:
    """Starts every command at once (each with its own log) and reaps each with wait4, so each one's CPU time and peak
    RSS are its own; past `timeout_s` the ones still running are killed (exit code -1)."""
    began = time.perf_counter()
    running: dict[int, tuple[int, subprocess.Popen]] = {}
    outcomes: list[ProcessOutcome | None] = [None] * len(cmds)
    peaks: dict[int, int | None] = {}
    for index, (cmd, log) in enumerate(zip(cmds, logs)):
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, **(env or {})})
        running[process.pid] = (index, process)
    while running:
        for pid, (index, process) in list(running.items()):
            timed_out = time.perf_counter() - began > timeout_s
            if timed_out:
                process.send_signal(signal.SIGKILL)
            peaks[pid] = vm_hwm_kib(pid) or peaks.get(pid)  # a high-water mark: the last reading is the peak so far
            found, status, usage = os.wait4(pid, 0 if timed_out else os.WNOHANG)
            if not found:
                continue
            code = -1 if timed_out else os.waitstatus_to_exitcode(status)
            process.returncode = code  # Popen must not reap it again
            outcomes[index] = ProcessOutcome(code, time.perf_counter() - began, usage.ru_utime + usage.ru_stime,
                                             usage.ru_maxrss, logs[index].read_text(errors="replace"), peaks.get(pid))
            del running[pid]
        time.sleep(0.05)
    return outcomes  # type: ignore[return-value]


def vm_hwm_kib(pid: int) -> int | None:
    """A running process's peak resident set since its exec (VmHWM, KiB); None once it has exited (a zombie has none)."""
    from .flow import vm_hwm_kib_of_status

    try:
        return vm_hwm_kib_of_status(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


class CaseFailed(RuntimeError):
    """One repetition of a case did not produce its figures."""


class Case(Protocol):
    key: str  # the name in reports/bench.json
    number: str  # its place in docs/performance.md: 1a, 1b, 2, 3, ...
    title: str
    phase: str  # "relay" first, on the prefilled inputs; "flow" next (its rate from case 4a); "ceiling" last (it appends to bench.in)

    def run(self, ctx: RunContext) -> dict:
        """One repetition; the figures always include `events_per_s`."""


def _java() -> str:
    java = shutil.which("java")
    if not java:
        raise CaseFailed("`java` is not on PATH (Java 17 or newer)")
    return java


def _checked(outcome: ProcessOutcome, what: str, log: Path) -> ProcessOutcome:
    if outcome.returncode != 0:
        raise CaseFailed(f"{what} exited {outcome.returncode} (log {log}):\n{outcome.output[-3000:]}")
    return outcome


def _process_figures(outcome: ProcessOutcome, events: int) -> dict:
    """The process's CPU from wait4, and its peak RSS from /proc: wait4's ru_maxrss is never below the bench's own size
    (Linux carries the forking process's peak across exec), so it said the bench's size for every small relay."""
    peak_kib = outcome.vm_hwm_kib if outcome.vm_hwm_kib is not None else outcome.maxrss_kib
    return {"process_wall_s": outcome.wall_s, "process_cpu_s": outcome.cpu_s,
            "process_cpu_us_per_event": outcome.cpu_s / events * 1e6, "peak_rss_mib": peak_kib / 1024,
            "peak_rss_from": "VmHWM" if outcome.vm_hwm_kib is not None else "wait4 ru_maxrss",
            "wait4_maxrss_mib": outcome.maxrss_kib / 1024}


def _run_kafka_tool(ctx: RunContext, key: str, tool: str, args: list[str]):
    """One run of a tool of the kafka-tools artifact, its output logged to the run's file."""
    log = ctx.work / f"{key}-{ctx.run}.log"
    cmd = [_java(), *JAVA_OPTS, "-cp", str(ctx.tools_lib / "*"), f"org.apache.kafka.tools.{tool}", *args]
    return _checked(run_process(cmd, log=log, timeout_s=120 + ctx.events / 500), tool, log)


@dataclass(frozen=True)
class ProducerCeiling:
    """Kafka's ProducerPerformance: max(N, 200 000) records of EVENT_BYTES to bench.in as fast as it goes, the first
    50 000 a warm-up (--warmup-records: the JVM's JIT and the producer's batches settle); its default producer (acks=all,
    idempotent, linger 5 ms). events/s is its steady-state line, a lower bound (steady_window_records_per_s, the median of
    its 1 s progress lines, beside it); with N records alone it measured mostly the JVM's warm-up."""

    key: str = "kafka_producer_perf"
    number: str = "1a"
    title: str = "Broker ceiling: ProducerPerformance"
    phase: str = "ceiling"

    def run(self, ctx: RunContext) -> dict:
        args = producer_performance_args("bench.in", ctx.events, EVENT_BYTES, ctx.bootstrap)
        outcome = _run_kafka_tool(ctx, self.key, "ProducerPerformance", args)
        figures = parse_producer_performance_steady(outcome.output)
        return {"events_per_s": figures["records_per_s"], **figures,
                **_process_figures(outcome, int(figures["total_records"]))}  # CPU over every record it sent


@dataclass(frozen=True)
class ConsumerCeiling:
    """Kafka's ConsumerPerformance: N records of bench.in in a fresh group; events/s is its fetch.nMsg.sec (the
    group's join, rebalance.time.ms, left out as the relays' start is); nMsg.sec counts the join too."""

    key: str = "kafka_consumer_perf"
    number: str = "1b"
    title: str = "Broker ceiling: ConsumerPerformance"
    phase: str = "ceiling"

    def run(self, ctx: RunContext) -> dict:
        outcome = _run_kafka_tool(ctx, self.key, "ConsumerPerformance",
                                  ["--bootstrap-server", ctx.bootstrap, "--topic", "bench.in", "--num-records", str(ctx.events),  # 4.x: --messages is deprecated
                                   "--group", f"bench-consumer-perf-{ctx.run}-{time.time_ns()}"])
        figures = parse_consumer_performance(outcome.output)
        numbers = {k: v for k, v in figures.items() if isinstance(v, float)}
        return {"events_per_s": numbers["fetch.nMsg.sec"], **numbers, **_process_figures(outcome, ctx.events)}


@dataclass(frozen=True)
class RelayCase:
    """A relay module (tests/bench/relays/<module>.py) in its own Python process: it consumes the N prefilled events
    of bench.in in a fresh group, produces each to bench.out, and writes its clock to a JSON file."""

    key: str
    number: str
    title: str
    module: str
    env: tuple[tuple[str, str], ...] = ()  # extra environment of the relay process (keys, settings of a later case)
    phase: str = "relay"
    source: str = "bench.in"
    drain: bool = False  # True: the drain's signed orders (ctx.drain_orders of them), not the bench's N events

    def run(self, ctx: RunContext) -> dict:
        events = ctx.drain_orders if self.drain else ctx.events
        if not events:
            raise CaseFailed(f"nothing was prefilled on {self.source} for {self.key}")
        log = ctx.work / f"{self.key}-{ctx.run}.log"
        result = ctx.work / f"{self.key}-{ctx.run}.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", f"tests.bench.relays.{self.module}", "--bootstrap", ctx.bootstrap,
               "--group", f"bench-{self.key}-{ctx.run}-{time.time_ns()}", "--events", str(events),
               "--result", str(result), "--source", self.source]
        outcome = _checked(run_process(cmd, log=log, timeout_s=120 + events / 50, env=dict(self.env)), self.module, log)
        if not result.exists():
            raise CaseFailed(f"{self.module} wrote no result (log {log})")
        figures = json.loads(result.read_text())
        return {**figures, "source": self.source, **_process_figures(outcome, events)}


@dataclass(frozen=True)
class FleetRelayCase:
    """The eventfleet relay (relays/eventfleet_relay.py), a fleet service with its defaults, in `processes` processes of
    one consumer group, on the signed prefill of its algorithm's input topic. Each process reports its clock and when it
    handled each event; the case adds them up (see `combine_processes`)."""

    key: str
    number: str
    title: str
    alg: str = "ed25519"
    batch: int = 0  # records per poll; 0 = the fleet's default (FLEET_KAFKA_BATCH_MAX_RECORDS, not set by the bench)
    processes: int = 1
    phase: str = "relay"

    def run(self, ctx: RunContext) -> dict:
        group = f"bench-{self.key}-{ctx.run}-{time.time_ns()}"
        logs = [ctx.work / f"{self.key}-{ctx.run}-p{i}.log" for i in range(1, self.processes + 1)]
        results = [log.with_suffix(".json") for log in logs]
        for result in results:
            result.unlink(missing_ok=True)
        cmds = [[sys.executable, "-m", "tests.bench.relays.eventfleet_relay", "--bootstrap", ctx.bootstrap, "--group", group,
                 "--events", str(ctx.events), "--result", str(result), "--alg", self.alg, "--batch", str(self.batch)]
                for result in results]
        # The prefill is written once and replayed by every run, minutes later: the freshness window must cover the
        # whole bench. It changes no work per event (the check still runs), only how old a record may be.
        env = {"FLEET_KEYS_DIR": str(ctx.keys[self.alg]), "FLEET_KEYS_WINDOW_S": "3600"}
        outcomes = run_processes(cmds, logs=logs, timeout_s=120 + ctx.events / 50, env=env)
        for outcome, log, result in zip(outcomes, logs, results):
            _checked(outcome, "eventfleet_relay", log)
            if not result.exists():
                raise CaseFailed(f"eventfleet_relay wrote no result (log {log})")
        runs = [json.loads(result.read_text()) for result in results]
        return combine_processes(runs, [_process_figures(o, ctx.events) for o in outcomes], ctx.events)


def combine_processes(runs: list[dict], processes: list[dict], events: int) -> dict:
    """One figure set for the processes of one group. Their clocks are CLOCK_MONOTONIC, one clock for the machine:
    events/s over first consumed (any) → last commit (all); `steady_events_per_s` over the time every process was
    handling (none still joining, none done), the fair base of a 1 vs 2 process ratio."""
    active = [r for r in runs if r["first"] is not None]  # a process may get no partition before the others are done
    first, last = min(r["first"] for r in active), max(r["last"] for r in active)
    handled = [h for h in (r.pop("handled_at") for r in runs) if h]
    cpu = sum(r["cpu_window_s"] for r in runs)
    return {
        "events": events, "processes": len(runs), "window_s": last - first, "events_per_s": events / (last - first),
        "steady_events_per_s": steady_rate(handled), "handled_per_process": [r["handled"] for r in runs],
        "cpu_window_s": cpu, "cpu_us_per_event": cpu / events * 1e6,
        "process_cpu_us_per_event": sum(p["process_cpu_s"] for p in processes) / events * 1e6,
        "peak_rss_mib": max(p["peak_rss_mib"] for p in processes),
        "per_process": [{**r, **p} for r, p in zip(runs, processes)],
    }
