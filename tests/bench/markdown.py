"""The README's table of the latest figures, written from reports/bench.json: `python -m tests.bench.markdown`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .stats import readable

__all__ = ["figures_table", "ratios_table", "targets_table", "workers_table"]

SERVICES = ("payments", "inventory", "shipping", "notifications", "tracker")


def _cell(summary: dict, figure: str, digits: int = 0) -> str:
    value = summary.get(figure)
    return "" if not value else f"{value['median']:,.{digits}f}"


def figures_table(report: dict) -> str:
    """One line per case: events/s (median, and the runs' range), CPU µs per event, peak RSS, the flow's latency."""
    lines = ["| # | case | events/s (median, range) | CPU µs/event | peak RSS MiB | flow p50 / p99 / max ms |",
             "|---|---|---|---|---|---|"]
    for case in report["cases"]:
        s = case["summary"]
        speed = s.get("events_per_s")
        rate = f"{speed['median']:,.0f} ({speed['min']:,.0f}–{speed['max']:,.0f})" if speed else "failed"
        flow = "max_worker_peak_rss_mib" in s  # the flow's latency; ProducerPerformance's own latencies are not that
        latency = " / ".join(_cell(s, f, 0) for f in ("p50_ms", "p99_ms", "max_ms")) if flow else ""
        rss = _cell(s, "max_worker_peak_rss_mib") or _cell(s, "peak_rss_mib")
        cpu = _cell(s, "cpu_us_per_event") or (_cell(s, "process_cpu_us_per_event") + " (process)" if "process_cpu_us_per_event" in s else "")
        lines.append(f"| {case['number']} | {case['title']} | {rate} | {cpu} | {rss} | {latency} |")
    return "\n".join(lines)


def ratios_table(report: dict) -> str:
    lines = ["| ratio | median | range the runs allow |", "|---|---|---|"]
    for r in report["ratios"]:
        lines.append(f"| {r['what']} | **{r['median']:.2f}** | {r['min']:.2f}–{r['max']:.2f} |")
    return "\n".join(lines)


def targets_table(report: dict) -> str:
    """Issue 17's figures: what each measured (median, and the runs' range) against its target."""
    lines = ["| figure | target | measured (median, range) | |", "|---|---|---|---|"]
    for t in report.get("targets", []):
        target = f"{t['compare'].replace('>=', '≥').replace('<=', '≤')} {t['target']:g} {t['unit']}"
        if t["median"] is None:
            lines.append(f"| {t['what']} | {target} | not measured | |")
            continue
        spread = f" ({readable(t['min'])}–{readable(t['max'])})" if t["min"] != t["max"] else ""
        lines.append(f"| {t['what']} | {target} | **{readable(t['median'])}**{spread} {t['unit']} | {'met' if t['met'] else 'missed'} |")
    return "\n".join(lines)


def workers_table(report: dict) -> str:
    """Each worker's CPU ms per order in the flow cases (the burst, the steady rate), medians of the runs."""
    flows = [c for c in report["cases"] if any(k.startswith("cpu_ms_per_order_") for k in c["summary"])]
    if not flows:
        return ""
    lines = ["| worker CPU ms per order | " + " | ".join(f"{c['number']} `{c['key']}`" for c in flows) + " |",
             "|---|" + "---|" * len(flows)]
    for service in SERVICES:
        cells = [readable(c["summary"][f"cpu_ms_per_order_{service}"]["median"]) if f"cpu_ms_per_order_{service}" in c["summary"] else ""
                 for c in flows]
        lines.append(f"| {service} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", nargs="?", type=Path, default=Path("reports/bench.json"))
    report = json.loads(parser.parse_args().report.read_text())
    machine = report["machine"]
    print(f"`make bench` on {report['generated_at'][:10]}: {report['events']:,} events of {report['event_bytes']} B, "
          f"{report['runs']} runs per case, {machine['cpu_count']} CPUs ({machine['cpu_model']}), load average at the "
          f"start {machine['load_average_at_start'][0]:.1f}, {report['took_s'] / 60:.0f} min"
          + (f"; the flow {report['flow_runs']} run(s) per case, a burst of {report['burst_orders']:,} orders and a steady "
             f"{report['steady_rate']:g} orders/s for {report.get('steady_s', 20):g} s; the drain {report['drain_orders']:,} orders" if "flow_runs" in report else "")
          + ".\n")
    print(figures_table(report) + "\n\n" + ratios_table(report))
    if report.get("targets"):
        print("\n" + targets_table(report))
    if workers := workers_table(report):
        print("\n" + workers)


if __name__ == "__main__":
    main()
