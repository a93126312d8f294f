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
from .stats import parse_consumer_performance, parse_producer_performance

__all__ = ["CASES", "PLANNED", "RATIOS", "Case", "RunContext", "run_process"]

JAVA_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class RunContext:
    """What one repetition of a case gets: the broker, the event count, the run's number and a folder for its files."""

    bootstrap: str
    events: int
    run: int
    work: Path
    tools_lib: Path


@dataclass(frozen=True)
class ProcessOutcome:
    returncode: int
    wall_s: float
    cpu_s: float  # user + system of the child, from wait4: the whole process, start-up included
    maxrss_kib: int
    output: str


def run_process(cmd: list[str], *, log: Path, timeout_s: float, env: dict[str, str] | None = None) -> ProcessOutcome:
    """Runs `cmd` with stdout and stderr in `log`, and reaps it with wait4 for its own rusage (CPU, peak RSS)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})})
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - began > timeout_s:
                process.send_signal(signal.SIGKILL)
                _, status, usage = os.wait4(process.pid, 0)
                status = -1
                break
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status) if status != -1 else -1  # Popen must not reap it again
    wall = time.perf_counter() - began
    return ProcessOutcome(process.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
                          log.read_text(errors="replace"))


class CaseFailed(RuntimeError):
    """One repetition of a case did not produce its figures."""


class Case(Protocol):
    key: str  # the name in reports/bench.json
    number: str  # its place in docs/performance.md: 1a, 1b, 2, 3, ...
    title: str
    phase: str  # "relay" runs first, on the prefilled bench.in; "ceiling" after (ProducerPerformance appends to it)

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
    return {"process_wall_s": outcome.wall_s, "process_cpu_s": outcome.cpu_s,
            "process_cpu_us_per_event": outcome.cpu_s / events * 1e6, "peak_rss_mib": outcome.maxrss_kib / 1024}


def _run_kafka_tool(ctx: RunContext, key: str, tool: str, args: list[str]):
    """One run of a tool of the kafka-tools artifact, its output logged to the run's file."""
    log = ctx.work / f"{key}-{ctx.run}.log"
    cmd = [_java(), *JAVA_OPTS, "-cp", str(ctx.tools_lib / "*"), f"org.apache.kafka.tools.{tool}", *args]
    return _checked(run_process(cmd, log=log, timeout_s=120 + ctx.events / 500), tool, log)


@dataclass(frozen=True)
class ProducerCeiling:
    """Kafka's ProducerPerformance: N records of EVENT_BYTES to bench.in as fast as it goes (its default producer:
    acks=all, idempotent, linger 5 ms). CPU covers the JVM's start too, so only its throughput is the ceiling."""

    key: str = "kafka_producer_perf"
    number: str = "1a"
    title: str = "Broker ceiling: ProducerPerformance"
    phase: str = "ceiling"

    def run(self, ctx: RunContext) -> dict:
        outcome = _run_kafka_tool(ctx, self.key, "ProducerPerformance",
                                  ["--topic", "bench.in", "--num-records", str(ctx.events), "--record-size", str(EVENT_BYTES),
                                   "--throughput", "-1", "--bootstrap-server", ctx.bootstrap])  # 4.x: --producer-props is deprecated
        figures = parse_producer_performance(outcome.output)
        return {"events_per_s": figures["records_per_s"], **figures, **_process_figures(outcome, ctx.events)}


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

    def run(self, ctx: RunContext) -> dict:
        log = ctx.work / f"{self.key}-{ctx.run}.log"
        result = ctx.work / f"{self.key}-{ctx.run}.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", f"tests.bench.relays.{self.module}", "--bootstrap", ctx.bootstrap,
               "--group", f"bench-{self.key}-{ctx.run}-{time.time_ns()}", "--events", str(ctx.events),
               "--result", str(result)]
        outcome = _checked(run_process(cmd, log=log, timeout_s=120 + ctx.events / 50, env=dict(self.env)), self.module, log)
        if not result.exists():
            raise CaseFailed(f"{self.module} wrote no result (log {log})")
        figures = json.loads(result.read_text())
        return {**figures, **_process_figures(outcome, ctx.events)}


# In the order of the table. Cases 4–6 (docs/performance.md, "Next cases") are added here as RelayCase entries with a
# relay module each, e.g. RelayCase("eventfleet_ed25519", "4a", "eventfleet relay, Ed25519", "eventfleet_relay",
# env=(("BENCH_SIGNING", "ed25519"),)), and their ratios below.
CASES: list[Case] = [
    ProducerCeiling(),
    ConsumerCeiling(),
    RelayCase("raw_aiokafka", "2", "Raw aiokafka relay (manual commit)", "raw_aiokafka"),
    RelayCase("faststream_plain", "3", "Plain FastStream relay (defaults)", "faststream_plain"),
]

# The headline: (numerator, denominator, what it says), on the medians of events/s.
RATIOS: list[tuple[str, str, str]] = [
    ("faststream_plain", "raw_aiokafka", "plain FastStream / raw aiokafka relay"),
    ("raw_aiokafka", "kafka_producer_perf", "raw aiokafka relay / broker producer ceiling"),
    # ("eventfleet_ed25519", "faststream_plain", "eventfleet (Ed25519) / plain FastStream"),   case 4a
    # ("eventfleet_hmac", "eventfleet_ed25519", "HMAC / Ed25519"),                              case 4b
    # ("eventfleet_batch", "eventfleet_ed25519", "batch / one-by-one consumption"),             case 5
    # ("eventfleet_2proc", "eventfleet_ed25519", "2 processes / 1 process"),                    case 6b
]

# Listed in reports/bench.json as not run yet, so a reader sees the whole plan.
PLANNED: list[dict[str, str]] = [
    {"number": "4a", "key": "eventfleet_ed25519", "title": "eventfleet relay: verify + sign with Ed25519 (fleet middleware)"},
    {"number": "4b", "key": "eventfleet_hmac", "title": "eventfleet relay with HMAC-SHA256 keys"},
    {"number": "5", "key": "eventfleet_batch", "title": "eventfleet relay with batch consumption"},
    {"number": "6a", "key": "end_to_end_latency", "title": "end-to-end latency (publish → relayed record read back)"},
    {"number": "6b", "key": "eventfleet_2proc", "title": "1 vs 2 relay processes in one group"},
]
