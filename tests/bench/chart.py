"""reports/bench.png, with matplotlib. Top: events/s of every case (median bar, min–max error bar), CPU µs per event, and
the order flow's latency from placed to terminal outcome (p99 bar, p50 inside it). Bottom: issue 17's figures against
their targets on one axis (1 = the target; right of it, met), and each worker's CPU ms per order in the flow cases."""

from __future__ import annotations

from pathlib import Path

from .stats import readable, target_score

SERVICES = ("payments", "inventory", "shipping", "notifications", "tracker")


def draw(report: dict, path: Path) -> Path | None:
    """Draws the chart; returns None (and says why) when matplotlib is missing: `pip install -e '.[bench]'`."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart", flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cases = [c for c in report["cases"] if c.get("summary", {}).get("events_per_s")]
    labels = [f"{c['number']}. {c['title']}" for c in cases]
    targets = report.get("targets", [])
    top_height, bottom_height = 0.7 * len(cases) + 1.6, 0.55 * max(len(targets), 5) + 1.6
    fig = plt.figure(figsize=(19, top_height + bottom_height))
    grid = fig.add_gridspec(2, 3, height_ratios=[top_height, bottom_height], width_ratios=[3, 2, 2])
    speed = fig.add_subplot(grid[0, 0])
    cpu, latency = fig.add_subplot(grid[0, 1], sharey=speed), fig.add_subplot(grid[0, 2], sharey=speed)
    against, workers = fig.add_subplot(grid[1, 0:2]), fig.add_subplot(grid[1, 2])
    positions = list(range(len(cases)))[::-1]

    def bars(axis, figure: str, colour: str, height: float = 0.8, only=lambda case: True) -> None:
        present = [(p, c["summary"][figure]) for p, c in zip(positions, cases) if figure in c["summary"] and only(c)]
        if not present:
            return
        ys, summaries = zip(*present)
        medians = [s["median"] for s in summaries]
        errors = [[s["median"] - s["min"] for s in summaries], [s["max"] - s["median"] for s in summaries]]
        axis.barh(ys, medians, xerr=errors, color=colour, capsize=4, height=height)
        for y, m in zip(ys, medians):
            axis.annotate(f"{m:,.0f}", (m, y), xytext=(6, 6), textcoords="offset points", fontsize=8)

    flow = lambda case: "max_worker_peak_rss_mib" in case["summary"]  # noqa: E731 - the order flow's cases
    bars(speed, "events_per_s", "#3b75af")
    speed.set_yticks(positions, labels, fontsize=9)
    speed.set_xscale("log")  # from the broker's 100 000/s to the flow's tens: one linear axis would hide the relays
    speed.set_xlabel("events/s (median, min–max; log scale; 5a: orders/s to the last terminal outcome)")
    bars(cpu, "cpu_us_per_event", "#c0504d")
    cpu.set_xscale("log")
    cpu.set_xlabel("CPU µs per event (flow: per order, all workers)")
    bars(latency, "p99_ms", "#9bbb59", only=flow)
    bars(latency, "p50_ms", "#4f6228", height=0.4, only=flow)
    latency.set_xscale("log")
    latency.set_xlabel("placed → terminal outcome, ms (p99; p50 inside)")
    for axis in (cpu, latency):
        axis.tick_params(labelleft=False)
    for axis in (speed, cpu, latency):
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # a short log axis labels its minor ticks over each other

    _against_targets(against, targets)
    _worker_cpu(workers, [c for c in report["cases"] if any(k.startswith("cpu_ms_per_order_") for k in c.get("summary", {}))])
    runs, events = report["runs"], report["events"]
    fig.suptitle(f"make bench: {events:,} events of {report['event_bytes']} B, runs per case: {runs} "
                 f"(the flow's: {report.get('flow_runs', runs)}), {report['machine']['cpu_count']} CPUs", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # the title above the panels, not over them
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _against_targets(axis, targets: list[dict]) -> None:
    """One bar per figure: its median as a multiple of its target (target / median for a ceiling); the range as error bars."""
    positions = list(range(len(targets)))[::-1]
    labels = [t["what"] for t in targets]
    for y, t in zip(positions, targets):
        if t["median"] is None:
            axis.annotate("not measured", (1, y), xytext=(6, -3), textcoords="offset points", fontsize=8, color="grey")
            continue
        score = target_score(t["compare"], t["median"], t["target"])
        ends = sorted(target_score(t["compare"], v, t["target"]) for v in (t["min"], t["max"]))
        axis.barh([y], [score], xerr=[[max(0.0, score - ends[0])], [max(0.0, ends[1] - score)]], capsize=4, height=0.7,
                  color="#4f81bd" if t["met"] else "#c0504d")
        note = f"{readable(t['median'])} {t['unit']} (target {t['compare']} {t['target']:g})"
        axis.annotate(note, (score, y), xytext=(6, 6), textcoords="offset points", fontsize=8)
    axis.axvline(1.0, color="black", linewidth=1)
    axis.set_yticks(positions, labels, fontsize=9)
    axis.set_xscale("log")
    axis.set_xlabel("issue 17's figures against their targets: 1 = the target, right of it = met (log scale)")


def _worker_cpu(axis, flows: list[dict]) -> None:
    """Each worker's CPU ms per order, one bar per flow case, the target's 4 ms as a line."""
    if not flows:
        axis.set_visible(False)
        return
    height = 0.8 / len(flows)
    positions = list(range(len(SERVICES)))[::-1]
    largest = 4.0
    for n, case in enumerate(flows):
        figures = [case["summary"].get(f"cpu_ms_per_order_{s}", {}).get("median", 0.0) for s in SERVICES]
        largest = max(largest, *figures)
        axis.barh([p + 0.4 - height * (n + 0.5) for p in positions], figures, height=height, label=f"{case['number']} {case['key']}")
    axis.axvline(4.0, color="black", linewidth=1, linestyle="--", label="target: at most 4 ms")
    axis.set_xlim(0, largest * 1.7)  # room on the right for the legend
    axis.set_yticks(positions, SERVICES, fontsize=9)
    axis.set_xlabel("worker CPU ms per order (median)")
    axis.legend(fontsize=8, loc="upper right")
