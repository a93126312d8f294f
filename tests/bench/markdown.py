"""The README's table of the latest figures, written from reports/bench.json: `python -m tests.bench.markdown`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["figures_table", "ratios_table"]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", nargs="?", type=Path, default=Path("reports/bench.json"))
    report = json.loads(parser.parse_args().report.read_text())
    machine = report["machine"]
    print(f"`make bench` on {report['generated_at'][:10]}: {report['events']:,} events of {report['event_bytes']} B, "
          f"{report['runs']} runs per case, {machine['cpu_count']} CPUs ({machine['cpu_model']}), load average at the "
          f"start {machine['load_average_at_start'][0]:.1f}, {report['took_s'] / 60:.0f} min.\n")
    print(figures_table(report) + "\n\n" + ratios_table(report))


if __name__ == "__main__":
    main()
