"""reports/bench.png: events/s of every case (median bar, min–max error bar), CPU µs per event, and the order flow's
end-to-end latency (p99 bar, p50 inside it), with matplotlib."""

from __future__ import annotations

from pathlib import Path


def draw(report: dict, path: Path) -> Path | None:
    """Draws the chart; returns None (and says why) when matplotlib is missing: `pip install -e '.[bench]'`."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart", flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in report["cases"] if c.get("summary", {}).get("events_per_s")]
    labels = [f"{c['number']}. {c['title']}" for c in cases]
    fig, (speed, cpu, latency) = plt.subplots(1, 3, sharey=True, figsize=(17, 0.7 * len(cases) + 2.2),
                                              gridspec_kw={"width_ratios": [3, 2, 2]})
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
    speed.set_xlabel("events/s (median, min–max; log scale)")
    bars(cpu, "cpu_us_per_event", "#c0504d")
    cpu.set_xscale("log")
    cpu.set_xlabel("CPU µs per event (flow: per order, all workers)")
    bars(latency, "p99_ms", "#9bbb59", only=flow)
    bars(latency, "p50_ms", "#4f6228", height=0.4, only=flow)
    latency.set_xscale("log")
    latency.set_xlabel("order → shipment, ms (p99; p50 inside)")
    runs, events = report["runs"], report["events"]
    fig.suptitle(f"make bench: {events:,} events of {report['event_bytes']} B, {runs} runs each, "
                 f"{report['machine']['cpu_count']} CPUs", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
