"""`make bench`: a broker of its own, the cases run --runs times each, then a table, reports/bench.json and reports/bench.png."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import broker
from .cases import Case, CaseFailed, RunContext
from .plan import CASES, RATIOS
from .chart import draw
from .contract import ALGORITHMS
from .events import EVENT_BYTES
from .stages import measure_stages, stage_table
from .stats import format_table, ratio, summarize

SUMMARIZED = ("events_per_s", "steady_events_per_s", "cpu_us_per_event", "process_cpu_us_per_event", "peak_rss_mib", "window_s",
              "avg_latency_ms", "p50_ms", "p99_ms", "max_ms", "max_worker_peak_rss_mib", "nMsg.sec", "steady_window_records_per_s", "total_records_per_s")
TABLE = [("number", "#", 0), ("title", "case", 0), ("events_per_s", "events/s median [min–max]", 0),
         ("cpu_us_per_event", "CPU µs/event", 1), ("process_cpu_us_per_event", "process CPU µs/event", 1),
         ("peak_rss_mib", "peak RSS MiB", 0), ("p50_ms", "flow p50 ms", 1), ("p99_ms", "flow p99 ms", 1),
         ("max_worker_peak_rss_mib", "worker RSS MiB", 0)]


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or platform.machine())
    mem_kib = next((int(line.split()[1]) for line in _lines("/proc/meminfo") if line.startswith("MemTotal:")), None)
    return {"cpu_count": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kib / 1024 ** 2, 1) if mem_kib else None,
            "platform": platform.platform(), "load_average_at_start": os.getloadavg()}


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def versions() -> dict:
    found = {"python": platform.python_version(), "kafka": broker.kafka_version()}
    for package in ("faststream", "aiokafka", "pydantic"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def run_cases(cases: list[Case], ctx_for, runs: int) -> dict[str, list[dict]]:
    """Round robin (run 1 of every case, then run 2, ...): a slow drift of the machine spreads over all cases alike.
    Relays first, on the prefilled inputs; then the whole flow at half of case 4a's measured rate; the ceiling last,
    since ProducerPerformance appends to bench.in."""
    results: dict[str, list[dict]] = {c.key: [] for c in cases}
    for phase in ("relay", "flow", "ceiling"):
        phase_cases = [c for c in cases if c.phase == phase]
        for run in range(1, runs + 1):
            for case in phase_cases:
                if getattr(case, "once", False) and run > 1:
                    continue
                if phase == "flow" and (rate := flow_rate(case, results)):
                    case = case.with_rate(rate)
                began = time.perf_counter()
                try:
                    figures = case.run(ctx_for(run))
                except CaseFailed as err:
                    print(f"  {case.number} {case.key} run {run}: FAILED {str(err).splitlines()[0]}", flush=True)
                    figures = {"error": str(err), **getattr(err, "figures", {})}
                else:
                    print(f"  {case.number} {case.key} run {run}: {case_line(figures)} ({time.perf_counter() - began:.1f}s)", flush=True)
                results[case.key].append({"run": run, **figures})
    return results


def flow_rate(case: Case, results: dict[str, list[dict]]) -> float | None:
    """5a: half of case 4a's median throughput (the issue's "half load"). 5b: half of what the whole fleet shipped in 5a
    when 5a found it saturated (a one-hop relay is far cheaper than the five-service flow), else 5a's rate."""
    half_of_4 = _median_of(results, "eventfleet_ed25519", "events_per_s")
    if case.key == "end_to_end_at_half_case_4" or not half_of_4:
        return half_of_4 / 2 if half_of_4 else None
    probe = [r for r in results.get("end_to_end_at_half_case_4", []) if r.get("shipped_per_s")]
    if probe and probe[0].get("saturated"):
        return probe[0]["shipped_per_s"] / 2
    return half_of_4 / 2


def _median_of(results: dict[str, list[dict]], key: str, figure: str) -> float | None:
    values = [r[figure] for r in results.get(key, []) if r.get(figure)]
    return statistics.median(values) if values else None


def case_line(figures: dict) -> str:
    line = f"{figures['events_per_s']:,.0f} events/s"
    if "shipped_per_s" in figures:
        line += (f" sent, {figures['shipped_per_s'] or 0:,.1f} shipped/s, p50 {figures.get('p50_ms', float('nan')):.1f} ms, "
                 f"p99 {figures.get('p99_ms', float('nan')):.1f} ms, max {figures.get('max_ms', float('nan')):.1f} ms")
    return line


def build_report(args, results: dict[str, list[dict]], *, meta: dict) -> dict:
    cases = []
    for case in CASES:
        if case.key not in results:
            continue
        good = [r for r in results[case.key] if "error" not in r]
        summary = {f: summarize(r[f] for r in good) for f in SUMMARIZED if good and all(r.get(f) is not None for r in good)}
        cases.append({"key": case.key, "number": case.number, "title": case.title, "description": " ".join(type(case).__doc__.split()),
                      "runs": results[case.key], "failed_runs": len(results[case.key]) - len(good), "summary": summary})
    summaries = {c["key"]: c["summary"] for c in cases}
    ratios = []
    for numerator, denominator, what, *figure in RATIOS:
        field = figure[0] if figure else "events_per_s"
        top, bottom = summaries.get(numerator, {}).get(field), summaries.get(denominator, {}).get(field)
        if top and bottom:
            ratios.append({"numerator": numerator, "denominator": denominator, "figure": field, "what": what, **ratio(top, bottom)})
    return {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "events": args.events,
            "runs": args.runs, "event_bytes": EVENT_BYTES, "partitions": broker.PARTITIONS, "bootstrap": broker.BOOTSTRAP,
            **meta, "machine": machine(), "versions": versions(), "cases": cases, "ratios": ratios}


def print_report(report: dict) -> None:
    rows = [{"number": c["number"], "title": c["title"], **c["summary"]} for c in report["cases"]]
    print("\n" + format_table(rows, TABLE))
    if report.get("stages"):
        print("\nper-stage profile (in-process, µs per call):\n" + stage_table(report["stages"]))
    for r in report["ratios"]:
        print(f"ratio {r['what']}: {r['median']:.3f} (runs allow {r['min']:.3f}–{r['max']:.3f})")
    print(f"\n{report['events']:,} events of {report['event_bytes']} B, {report['runs']} runs each; "
          f"{report['machine']['cpu_count']} CPUs ({report['machine']['cpu_model']}), took {report['took_s']:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="events per run of each case (default 20000)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each case (default 3)")
    parser.add_argument("--case", action="append", choices=[c.key for c in CASES], help="run only these (repeatable)")
    parser.add_argument("--report", type=Path, default=broker.REPO / "reports" / "bench.json")
    parser.add_argument("--chart", type=Path, default=broker.REPO / "reports" / "bench.png")
    parser.add_argument("--work", type=Path, default=broker.REPO / ".cache" / "bench", help="each run's log and result")
    parser.add_argument("--keep-running", action="store_true", help="leave the bench broker running after")
    parser.add_argument("--no-stages", action="store_true", help="leave out the in-process per-stage profile")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    began = time.perf_counter()
    cases = [c for c in CASES if not args.case or c.key in args.case]
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        tools = broker.ensure_tools() if any(c.phase == "ceiling" for c in cases) else broker.TOOLS_LIB
        print(broker.fresh_broker(), flush=True)
        asyncio.run(broker.create_topics())
        asyncio.run(broker.create_fleet_topics())
        prefill_s = asyncio.run(broker.prefill(args.events))
        print(f"prefilled bench.in with {args.events:,} events in {prefill_s:.1f}s", flush=True)
        keys = {alg: broker.keys_dir(args.work, alg) for alg in ALGORITHMS}
        for alg, folder in keys.items():
            signed_s = asyncio.run(broker.prefill_signed(args.events, alg, folder))
            print(f"prefilled the {alg} relay's input with {args.events:,} signed events in {signed_s:.1f}s", flush=True)
        results = run_cases(cases, lambda run: RunContext(broker.BOOTSTRAP, args.events, run, args.work, tools, keys), args.runs)
    finally:
        if not args.keep_running:
            print(broker.stop_broker(), flush=True)
    # In-process, with the broker stopped: what each step of the per-event path costs on its own.
    stages = measure_stages() if not args.no_stages else {}
    report = build_report(args, results, meta={"prefill_s": prefill_s, "stages": stages, "took_s": time.perf_counter() - began})
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    chart = draw(report, args.chart)
    print(f"report: {args.report}" + (f", chart: {chart}" if chart else ""), flush=True)
    return 0 if all(c["failed_runs"] == 0 for c in report["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
