"""Pure figures of the benchmark: median and min–max spread of repeated runs, ratios between cases, tool output parsing, the table."""

from __future__ import annotations

import operator
import re
import statistics
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

__all__ = [
    "Summary", "Target", "format_table", "meets", "parse_consumer_performance", "parse_producer_performance", "ratio",
    "readable", "summarize", "target_rows", "target_score",
]

Summary = dict  # {"median", "min", "max", "spread", "spread_pct", "runs"}: see summarize()


def summarize(values: Iterable[float]) -> Summary:
    """Median and min–max spread of one figure over repeated runs; `spread_pct` is (max − min) / median in percent."""
    runs = [float(v) for v in values]
    if not runs:
        raise ValueError("no runs to summarize")
    median = statistics.median(runs)
    low, high = min(runs), max(runs)
    spread_pct = (high - low) / median * 100 if median else None
    return {"median": median, "min": low, "max": high, "spread": high - low, "spread_pct": spread_pct, "runs": runs}


def ratio(numerator: Summary, denominator: Summary) -> dict:
    """`numerator / denominator` of two summaries: the ratio of medians, and the widest range the runs allow."""
    if not denominator["median"] or not denominator["min"]:
        raise ValueError("the denominator has a zero figure")
    return {
        "median": numerator["median"] / denominator["median"],
        "min": numerator["min"] / denominator["max"],
        "max": numerator["max"] / denominator["min"],
    }


COMPARISONS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}


@dataclass(frozen=True)
class Target:
    """One figure the issue sets a target for: where it comes from ((case key, figure), or ("ratio", "num/den")); with
    several sources, the largest counts (the worst worker). `compare` is one of COMPARISONS: measured <compare> target."""

    what: str
    sources: tuple[tuple[str, str], ...]
    compare: str
    target: float
    unit: str


def readable(value: float | None) -> str:
    """A figure as a reader wants it: 12,095 / 64.4 / 9.81 / 0.0126 (three significant digits, at most no decimals)."""
    if value is None:
        return "-"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def meets(compare: str, value: float, target: float) -> bool:
    """Whether a measured value meets its target: `value <compare> target` (">=", "<=", "<", ">")."""
    return COMPARISONS[compare](value, target)


def target_score(compare: str, value: float, target: float) -> float:
    """How far a value is from its target as one number, whichever way the target points: 1 is the target, above 1 met
    (value / target for a floor, target / value for a ceiling), so figures in orders/s, ms and cores share one axis."""
    if value <= 0 or target <= 0:
        return float("inf") if compare in ("<=", "<") and value <= 0 else 0.0
    return value / target if compare in (">=", ">") else target / value


def target_rows(targets: Sequence[Target], summaries: Mapping[str, Mapping[str, Summary]], ratios: Sequence[Mapping]) -> list[dict]:
    """Each target with what the run measured: the median and the runs' range (of the largest source when several
    have it), and whether the median meets the target; `median` None when no source was measured."""
    by_pair = {f"{r['numerator']}/{r['denominator']}": r for r in ratios}
    rows = []
    for t in targets:
        found = []
        for source, figure in t.sources:
            measured = by_pair.get(figure) if source == "ratio" else summaries.get(source, {}).get(figure)
            if measured and measured.get("median") is not None:
                found.append((source, measured))
        row = {"what": t.what, "compare": t.compare, "target": t.target, "unit": t.unit, "median": None, "min": None,
               "max": None, "met": None, "from": None}
        if found:
            source, worst = max(found, key=lambda pair: pair[1]["median"])
            row.update(median=worst["median"], min=max(m["min"] for _, m in found), max=max(m["max"] for _, m in found),
                       met=meets(t.compare, worst["median"], t.target), **{"from": source})
        rows.append(row)
    return rows


# "20000 records sent, 51813.5 records/sec (24.71 MB/sec), 310.95 ms avg latency, 540.00 ms max latency,
#  318 ms 50th, 509 ms 95th, 529 ms 99th, 538 ms 99.9th."
_PRODUCER_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<records_per_s>[\d.]+) records/sec \((?P<mb_per_s>[\d.]+) MB/sec\), "
    r"(?P<avg_latency_ms>[\d.]+) ms avg latency, (?P<max_latency_ms>[\d.]+) ms max latency"
    r"(?:, (?P<p50_ms>[\d.]+) ms 50th, (?P<p95_ms>[\d.]+) ms 95th, (?P<p99_ms>[\d.]+) ms 99th, (?P<p999_ms>[\d.]+) ms 99\.9th)?"
)


def steady_rate(handled: Sequence[Sequence[float]]) -> float | None:
    """Events per second while every process was handling: from the latest first event of any process to the earliest
    last one, counting every process's events in between. Leaves out a process still joining its group and one whose
    partitions ran dry first; for one process it is its own first-to-last rate. None if the spans never overlap."""
    if not handled or any(len(times) < 2 for times in handled):
        return None
    start, end = max(times[0] for times in handled), min(times[-1] for times in handled)
    if end <= start:
        return None
    inside = sum(1 for times in handled for t in times if start <= t <= end)
    return (inside - 1) / (end - start)


def parse_producer_performance(output: str) -> dict[str, float]:
    """The final summary of `ProducerPerformance` (the last matching line: the periodic lines come before it)."""
    found = [m for m in (_PRODUCER_SUMMARY.search(line) for line in output.splitlines()) if m]
    if not found:
        raise ValueError(f"no ProducerPerformance summary line in:\n{output[-2000:]}")
    return {k: float(v) for k, v in found[-1].groupdict().items() if v is not None}


def parse_consumer_performance(output: str) -> dict[str, float | str]:
    """`ConsumerPerformance`'s header line (start.time, ..., fetch.nMsg.sec) and the values line under it, as a dict."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.startswith("start.time"):
            headers = [h.strip() for h in line.split(",")]
            values = [v.strip() for v in lines[i + 1].split(",")]
            if len(values) < len(headers):
                break
            parsed: dict[str, float | str] = {}
            for header, value in zip(headers, values):
                try:
                    parsed[header] = float(value)
                except ValueError:
                    parsed[header] = value  # start.time and end.time are timestamps
            return parsed
    raise ValueError(f"no ConsumerPerformance header and values in:\n{output[-2000:]}")


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(rows: Sequence[Mapping], columns: Sequence[tuple[str, str, int]]) -> str:
    """A plain-text table: `columns` are (key, title, digits); a row value is a number, a Summary (median [min–max]),
    a string, or missing ("-"). Text columns are left-aligned, figures right-aligned."""
    def cell(value, digits: int) -> str:
        if value is None:
            return "-"
        if isinstance(value, Mapping):
            return f"{_number(value['median'], digits)} [{_number(value['min'], digits)}–{_number(value['max'], digits)}]"
        if isinstance(value, (int, float)):
            return _number(value, digits)
        return str(value)

    cells = [[cell(row.get(key), digits) for key, _, digits in columns] for row in rows]
    titles = [title for _, title, _ in columns]
    widths = [max([len(t)] + [len(r[i]) for r in cells]) for i, t in enumerate(titles)]
    text_columns = {i for i, (key, _, _) in enumerate(columns)
                    if any(isinstance(row.get(key), str) for row in rows)
                    and all(isinstance(row.get(key), str) or row.get(key) is None for row in rows)}

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i in text_columns else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    return "\n".join([line(titles), line(["-" * w for w in widths]), *(line(r) for r in cells)])
