"""`make bench-pair`: one worker setting at two values, the whole order flow at one offered rate, run in alternation on
the bench broker; what each value shipped, and their ratio, measured side by side in one run."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from . import broker
from .flow import FlowLatency, _context, _supervisor_lines_to_stderr
from .stats import summarize

FIGURES = ("shipped_per_s", "events_per_s", "p50_ms", "p99_ms", "cpu_us_per_event", "machine_busy_pct")


def abba(pairs: int) -> list[int]:
    """Which value runs when (0 = first, 1 = second): A B, B A, A B, ... so that a drift of the machine during the run
    weighs on both values alike, and neither always runs on a broker the other just loaded."""
    return [side for n in range(pairs) for side in ((0, 1) if n % 2 == 0 else (1, 0))]


def paired_ratios(runs: list[dict], figure: str = "shipped_per_s") -> list[float]:
    """second / first of each pair, in the order the pairs ran (a pair missing the figure on either side is left out)."""
    ratios = []
    for first, second in zip(runs[0::2], runs[1::2]):
        by_side = {run["side"]: run.get(figure) for run in (first, second)}
        if by_side.get(0) and by_side.get(1) is not None:
            ratios.append(by_side[1] / by_side[0])
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.pair", description=__doc__)
    parser.add_argument("--setting", required=True, metavar="NAME=A,B", help="a worker setting and the two values to compare")
    parser.add_argument("--rate", type=float, required=True, help="orders per second offered to both values")
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs, run in ABBA order (default 3)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of orders per run at the rate (default 20)")
    parser.add_argument("--report", type=Path, default=broker.REPO / "reports" / "bench-pair.json")
    parser.add_argument("--work", type=Path, default=broker.REPO / ".cache" / "bench-pair")
    args = parser.parse_args(argv)
    name, _, values = args.setting.partition("=")
    sides = values.split(",")
    if not name or len(sides) != 2:
        parser.error("--setting takes NAME=A,B: one setting, two values")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    _supervisor_lines_to_stderr()
    began = time.perf_counter()
    orders = max(1, round(args.rate * args.window))
    runs: list[dict] = []
    try:
        print(broker.fresh_broker(), flush=True)
        asyncio.run(broker.create_fleet_topics())
        for n, side in enumerate(abba(args.pairs), start=1):
            case = FlowLatency(orders=orders, worker_env=((name, sides[side]),), probe=True, key=f"pair-{side}").with_rate(args.rate)
            figures = case.run(_context(bootstrap=broker.BOOTSTRAP, events=orders, run=n, work=args.work, tools_lib=Path("."), keys={}))
            runs.append({"run": n, "side": side, "value": sides[side], **{f: figures.get(f) for f in FIGURES},
                         "saturated": figures.get("saturated")})
            print(f"  run {n} {name}={sides[side]}: {figures.get('events_per_s') or 0:.0f}/s offered, "
                  f"{figures.get('shipped_per_s') or 0:.1f}/s shipped, p50 {figures.get('p50_ms') or float('nan'):.0f} ms, "
                  f"p99 {figures.get('p99_ms') or float('nan'):.0f} ms, workers' CPU {(figures.get('cpu_us_per_event') or 0) / 1000:.2f} ms "
                  f"per order, machine {figures.get('machine_busy_pct') or 0:.0f} % busy", flush=True)
    finally:
        print(broker.stop_broker(), flush=True)
    ratios = paired_ratios(runs)
    p99_ratios = paired_ratios(runs, "p99_ms")  # what a fleet that keeps up differs in: its latency, not what it ships
    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "setting": name, "values": sides,
        "rate_per_s": args.rate, "orders_per_run": orders, "runs": runs, "took_s": round(time.perf_counter() - began),
        "shipped_per_s": {v: summarize(r["shipped_per_s"] for r in runs if r["side"] == s and r["shipped_per_s"] is not None)
                          for s, v in enumerate(sides) if any(r["side"] == s and r["shipped_per_s"] is not None for r in runs)},
        "ratio_second_over_first": {"per_pair": ratios, "median": statistics.median(ratios) if ratios else None},
        "p99_ratio_second_over_first": {"per_pair": p99_ratios, "median": statistics.median(p99_ratios) if p99_ratios else None},
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"shipped/s {name}={sides[1]} / {name}={sides[0]}: median {report['ratio_second_over_first']['median']}, "
          f"per pair {[round(r, 3) for r in ratios]}; p99 per pair {[round(r, 3) for r in p99_ratios]} ({report['took_s']}s); "
          f"report: {args.report}", flush=True)
    return 0 if ratios else 1


if __name__ == "__main__":
    sys.exit(main())
