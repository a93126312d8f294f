"""Case 1a with a warm-up (KIP-1052): ProducerPerformance's arguments and its steady-state summary line, parsed."""

from __future__ import annotations

import re
import statistics

from .stats import parse_producer_performance

__all__ = ["MIN_RECORDS", "WARMUP_RECORDS", "parse_producer_performance_steady", "producer_performance_args"]

# At 20 000 records the whole run is about 1 s, most of it the JIT and the first metadata round trips: too short for a
# ceiling. 200 000 records of 500 B (100 MB) run 5–10 s on the 2-CPU dev VM; the first 50 000 are the warm-up.
MIN_RECORDS = 200_000
WARMUP_RECORDS = 50_000

# "150000 steady state records sent, 37678.975132 records/sec (17.97 MB/sec), 822.28 ms avg latency, 1106.00 ms max
#  latency, 855 ms 50th, 1025 ms 95th, 1081 ms 99th, 1105 ms 99.9th."  (kafka-tools 4.x, printed after the whole-run line)
_STEADY_SUMMARY = re.compile(
    r"(?P<records>\d+) steady state records sent, (?P<records_per_s>[\d.]+) records/sec \((?P<mb_per_s>[\d.]+) MB/sec\), "
    r"(?P<avg_latency_ms>[\d.]+) ms avg latency, (?P<max_latency_ms>[\d.]+) ms max latency, (?P<p50_ms>[\d.]+) ms 50th, "
    r"(?P<p95_ms>[\d.]+) ms 95th, (?P<p99_ms>[\d.]+) ms 99th, (?P<p999_ms>[\d.]+) ms 99\.9th"
)
_WARMUP = re.compile(r"Warmup first (?P<warmup>\d+) records")
# A progress line, every --reporting-interval: "29787 records sent, 25612.2 records/sec (12.21 MB/sec), 707.5 ms avg
# latency, 1131.0 ms max latency."  After "In steady state." they count only the records sent after the warm-up.
_WINDOW = re.compile(r"^(?P<records>\d+) records sent, (?P<records_per_s>[\d.]+) records/sec .* ms max latency\.$")
STEADY_MARK = "In steady state."


def producer_performance_args(topic: str, events: int, record_size: int, bootstrap: str, *,
                              min_records: int = MIN_RECORDS, warmup_records: int = WARMUP_RECORDS) -> list[str]:
    """ProducerPerformance's arguments for case 1a: at least `min_records` records, the first `warmup_records` of them
    (never more than a quarter) left out of the steady-state line. The producer keeps its defaults (acks=all, idempotent)."""
    total = max(events, min_records)
    warmup = min(warmup_records, total // 4)
    return ["--topic", topic, "--num-records", str(total), "--warmup-records", str(warmup), "--record-size", str(record_size),
            "--throughput", "-1", "--bootstrap-server", bootstrap,  # 4.x: --producer-props is deprecated
            "--reporting-interval", "1000"]  # 1 s progress lines: steady_window_records_per_s needs a few of them


def parse_producer_performance_steady(output: str) -> dict[str, float]:
    """The steady-state summary (records sent after the warm-up) under the keys of parse_producer_performance, plus
    `warmup_records` and the whole run's line as `total_records`, `total_records_per_s`, `total_avg_latency_ms`.

    The whole-run line comes first and matches parse_producer_performance; the steady line ("N steady state records
    sent") does not, so the two never mix up.

    The steady line is a lower bound: its clock starts when record `warmup` is sent, while the warm-up records still
    queued in the producer (up to buffer.memory, 32 MiB: tens of thousands at 500 B) complete inside its window but
    are not counted. `steady_window_records_per_s`, the median of the steady progress lines after the first (the one
    that spans that drain), has no such bias; it is there when at least two such lines were printed."""
    steady = [m for m in map(_STEADY_SUMMARY.search, output.splitlines()) if m]
    if not steady:
        raise ValueError(f"no ProducerPerformance steady-state line (was --warmup-records given?) in:\n{output[-2000:]}")
    figures = {k: float(v) for k, v in steady[-1].groupdict().items()}
    warmup = _WARMUP.search(output)
    if warmup:
        figures["warmup_records"] = float(warmup["warmup"])
    total = parse_producer_performance(output)
    figures.update({"total_records": total["records"], "total_records_per_s": total["records_per_s"],
                    "total_avg_latency_ms": total["avg_latency_ms"]})
    windows = _steady_windows(output)[1:]  # the first steady window holds the warm-up's drain
    if windows:
        figures["steady_window_records_per_s"] = statistics.median(windows)
        figures["steady_windows"] = float(len(windows))
    return figures


def _steady_windows(output: str) -> list[float]:
    """records/sec of every progress line after "In steady state." (the whole-run and steady summaries do not match)."""
    lines = [line.strip() for line in output.splitlines()]
    if STEADY_MARK not in lines:
        return []
    after = lines[lines.index(STEADY_MARK) + 1:]
    return [float(m["records_per_s"]) for m in map(_WINDOW.match, after) if m]
