"""`make bench`: a broker of its own, the cases run --runs times each, then a table, reports/bench.json and reports/bench.png."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import broker
from .cases import Case, CaseFailed, RunContext
from .plan import CASES, RATIOS, TARGETS
from .chart import draw
from .contract import ALGORITHMS
from .drain import DRAIN_ORDERS, ORDERS
from .events import EVENT_BYTES
from .flow import BURST_ORDERS, DEFAULT_RATE_PER_S, FlowLatency
from .stages import measure_stages, stage_table
from .stats import format_table, ratio, readable, summarize, target_rows

FLOW_SERVICES = FlowLatency.services
DRAIN_CASES = ("payments_drain", "raw_aiokafka_drain")
# 5b's orders arrive for this long: on today's flow (about 25 ms of worker CPU per order, 2 CPUs) 3,000 orders at 250/s
# take about two minutes to reach their outcomes and be folded by the tracker; --steady-s 20 for a longer window.
STEADY_S = 12.0
SUMMARIZED = ("events_per_s", "steady_events_per_s", "cpu_us_per_event", "process_cpu_us_per_event", "peak_rss_mib", "window_s",
              "avg_latency_ms", "p50_ms", "p99_ms", "max_ms", "max_worker_peak_rss_mib", "nMsg.sec", "steady_window_records_per_s",
              "total_records_per_s",
              # the order flow (5a, 5b) and the drain (7a)
              "shipped_per_s", "lost", "terminal_after_s", "told_after_s", "settled_after_s", "machine_busy_pct",
              "fleet_idle_cores", "max_worker_cpu_ms_per_order", "max_worker_peak_rss_mb", "peak_rss_mb",
              *(f"cpu_ms_per_order_{service}" for service in FLOW_SERVICES))
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


def run_cases(cases: list[Case], ctx_for, runs: int, flow_runs: int | None = None) -> dict[str, list[dict]]:
    """Round robin (run 1 of every case, then run 2, ...): a slow drift of the machine spreads over all cases alike.
    Relays first, on the prefilled inputs (the drain's included); then the whole flow (a burst, then a steady rate),
    `flow_runs` times (default `runs`); the ceiling last, since ProducerPerformance appends to bench.in."""
    results: dict[str, list[dict]] = {c.key: [] for c in cases}
    for phase in ("relay", "flow", "ceiling"):
        phase_cases = [c for c in cases if c.phase == phase]
        for run in range(1, (flow_runs or runs if phase == "flow" else runs) + 1):
            for case in phase_cases:
                if getattr(case, "once", False) and run > 1:
                    continue
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


def configured(cases: list[Case], *, steady_rate: float, burst_orders: int, idle_s: float,
               steady_s: float = STEADY_S) -> list[Case]:
    """The flow cases with the command line's burst size and rest (5a), rate and its duration (5b); the others as listed."""
    chosen = []
    for case in cases:
        if isinstance(case, FlowLatency) and case.burst:
            case = replace(case, orders=burst_orders, idle_s=idle_s,
                           title=f"Order flow, a burst of {burst_orders:,} orders: capacity (the fleet at rest before it)")
        elif isinstance(case, FlowLatency):
            case = replace(case.with_rate(steady_rate), window_s=steady_s,
                           title=f"Order flow at a steady {steady_rate:g} orders/s: latency, CPU per order")
        chosen.append(case)
    return chosen


def case_line(figures: dict) -> str:
    line = f"{figures['events_per_s'] or 0:,.0f} events/s"
    if figures.get("mode") == "burst":
        return (f"{figures['orders']:,} orders at once: {figures['events_per_s'] or 0:,.1f} orders/s to their terminal outcome "
                f"({figures.get('terminal_after_s') or 0:.1f} s), all told after {figures.get('told_after_s') or float('nan'):.1f} s, "
                f"settled after {figures.get('settled_after_s') or float('nan'):.1f} s; lost {figures.get('lost')}; at rest "
                f"{figures.get('fleet_idle_cores') or float('nan'):.3f} cores; {_per_worker(figures)}")
    if "shipped_per_s" in figures:
        line += (f" sent, {figures['shipped_per_s'] or 0:,.1f} shipped/s, p50 {figures.get('p50_ms', float('nan')):.1f} ms, "
                 f"p99 {figures.get('p99_ms', float('nan')):.1f} ms, max {figures.get('max_ms', float('nan')):.1f} ms; "
                 f"machine {figures.get('machine_busy_pct') or 0:.0f} % busy; {_per_worker(figures)}")
    return line


def _per_worker(figures: dict) -> str:
    per = figures.get("cpu_ms_per_order") or {}
    return "CPU ms/order " + ", ".join(f"{service} {ms:.1f}" for service, ms in per.items())


def build_report(args, results: dict[str, list[dict]], *, meta: dict, listed: list[Case] | None = None) -> dict:
    """The report: every run of every case in `listed` (default CASES) that ran, their summaries, ratios and targets."""
    cases = []
    for case in listed or CASES:
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
            "flow_runs": args.flow_runs, "steady_rate": args.steady_rate, "steady_s": args.steady_s,
            "burst_orders": min(args.burst_orders, args.events), "idle_s": args.idle_s, "drain_orders": min(args.drain_orders, args.events),
            **meta, "machine": machine(), "versions": versions(), "cases": cases, "ratios": ratios,
            "targets": target_rows(TARGETS, summaries, ratios)}


def print_report(report: dict) -> None:
    rows = [{"number": c["number"], "title": c["title"], **c["summary"]} for c in report["cases"]]
    print("\n" + format_table(rows, TABLE))
    if report.get("stages"):
        print("\nper-stage profile (in-process, µs per call):\n" + stage_table(report["stages"]))
    for r in report["ratios"]:
        print(f"ratio {r['what']}: {r['median']:.3f} (runs allow {r['min']:.3f}–{r['max']:.3f})")
    flows = [c for c in report["cases"] if any(k.startswith("cpu_ms_per_order_") for k in c["summary"])]
    if flows:
        columns = [("service", "worker CPU ms per order", 0)] + [(c["key"], f"{c['number']} {c['key']}", 2) for c in flows]
        rows = [{"service": s, **{c["key"]: c["summary"].get(f"cpu_ms_per_order_{s}") for c in flows}} for s in FLOW_SERVICES]
        print("\n" + format_table(rows, columns))
    if report.get("targets"):
        print("\nissue 17's targets (median of the runs, and their range):")
        for t in report["targets"]:
            verdict = "not measured" if t["median"] is None else ("met" if t["met"] else "missed")
            value = "-" if t["median"] is None else f"{readable(t['median'])} ({readable(t['min'])}–{readable(t['max'])}) {t['unit']}"
            print(f"  {t['what']}: {value}, target {t['compare']} {t['target']:g} {t['unit']}: {verdict}")
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
    parser.add_argument("--flow-runs", type=int, default=3,
                        help="repetitions of the flow cases 5a and 5b (default 3: each about 50 s on today's flow)")
    parser.add_argument("--burst-orders", type=int, default=BURST_ORDERS,
                        help=f"5a: orders sent at once to the whole flow (default {BURST_ORDERS}; never more than --events)")
    parser.add_argument("--steady-rate", type=float, default=DEFAULT_RATE_PER_S,
                        help=f"5b: orders per second, open loop (default {DEFAULT_RATE_PER_S:g}; orders never more than --events)")
    parser.add_argument("--steady-s", type=float, default=STEADY_S,
                        help=f"5b: seconds of orders at that rate (default {STEADY_S:g}: 3,000 orders at 250/s)")
    parser.add_argument("--idle-s", type=float, default=20.0, help="5a: seconds of the whole fleet at rest before the burst (default 20)")
    parser.add_argument("--drain-orders", type=int, default=DRAIN_ORDERS,
                        help=f"7a, 7b: signed orders prefilled for the drain (default {DRAIN_ORDERS}; never more than --events)")
    parser.add_argument("--keep-running", action="store_true", help="leave the bench broker running after")
    parser.add_argument("--no-stages", action="store_true", help="leave out the in-process per-stage profile")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    began = time.perf_counter()
    cases = configured([c for c in CASES if not args.case or c.key in args.case], steady_rate=args.steady_rate,
                       burst_orders=min(args.burst_orders, args.events), idle_s=args.idle_s, steady_s=args.steady_s)
    drain_orders = min(args.drain_orders, args.events) if any(getattr(c, "key", "") in DRAIN_CASES for c in cases) else 0
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
        if drain_orders:
            asyncio.run(broker.create_registry_topics())
            keys["fleet"] = broker.fleet_keys_dir(args.work)
            orders_s = asyncio.run(broker.prefill_orders(drain_orders, keys["fleet"]))
            print(f"prefilled {ORDERS} with {drain_orders:,} signed orders for the drain in {orders_s:.1f}s", flush=True)
        results = run_cases(cases, lambda run: RunContext(broker.BOOTSTRAP, args.events, run, args.work, tools, keys, drain_orders),
                            args.runs, args.flow_runs)
    finally:
        if not args.keep_running:
            print(broker.stop_broker(), flush=True)
    # In-process, with the broker stopped: what each step of the per-event path costs on its own.
    stages = measure_stages() if not args.no_stages else {}
    report = build_report(args, results, meta={"prefill_s": prefill_s, "stages": stages, "took_s": time.perf_counter() - began},
                          listed=cases)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    chart = draw(report, args.chart)
    print(f"report: {args.report}" + (f", chart: {chart}" if chart else ""), flush=True)
    return 0 if all(c["failed_runs"] == 0 for c in report["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
