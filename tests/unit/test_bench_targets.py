"""Issue 17's figures in make bench: each target read from a case or a ratio, how it is scored, shown and configured."""

import pytest

from tests.bench.stats import Target, meets, readable, summarize, target_rows, target_score


def test_a_target_is_met_when_the_median_lies_on_its_side():
    assert meets(">=", 500.0, 500.0) and not meets(">=", 499.9, 500.0)
    assert meets("<=", 150.0, 150.0) and not meets("<=", 151.0, 150.0)
    assert meets("<", 149.9, 150.0) and not meets("<", 150.0, 150.0)


def test_the_score_is_one_at_the_target_and_above_one_when_met_whichever_way_it_points():
    assert target_score(">=", 130.0, 500.0) == pytest.approx(0.26)
    assert target_score(">=", 1000.0, 500.0) == pytest.approx(2.0)
    assert target_score("<=", 300.0, 150.0) == pytest.approx(0.5), "a p99 twice the ceiling scores one half"
    assert target_score("<=", 0.01, 0.02) == pytest.approx(2.0)
    assert target_score("<=", 0.0, 0.02) == float("inf"), "nothing used at rest meets any ceiling"


def test_a_target_row_reads_a_case_figure_or_a_ratio_and_says_whether_its_median_meets_it():
    targets = [Target("capacity", (("flow_capacity", "events_per_s"),), ">=", 500.0, "orders/s"),
               Target("drain / raw", (("ratio", "payments_drain/raw_aiokafka_drain"),), ">=", 0.15, "x"),
               Target("nobody measured this", (("flow_steady", "p99_ms"),), "<=", 150.0, "ms")]
    summaries = {"flow_capacity": {"events_per_s": summarize([130.0, 120.0, 140.0])}}
    ratios = [{"numerator": "payments_drain", "denominator": "raw_aiokafka_drain", "median": 0.2, "min": 0.1, "max": 0.3}]
    capacity, drain, missing = target_rows(targets, summaries, ratios)
    assert (capacity["median"], capacity["min"], capacity["max"], capacity["met"]) == (130.0, 120.0, 140.0, False)
    assert (drain["median"], drain["met"], drain["from"]) == (0.2, True, "ratio")
    assert missing["median"] is None and missing["met"] is None


def test_with_several_sources_the_largest_median_counts_as_the_worst_worker():
    rss = Target("peak RSS", (("flow_capacity", "max_worker_peak_rss_mb"), ("payments_drain", "peak_rss_mb")), "<", 150.0, "MB")
    summaries = {"flow_capacity": {"max_worker_peak_rss_mb": summarize([84.0, 86.0])},
                 "payments_drain": {"peak_rss_mb": summarize([160.0, 90.0])}}
    (row,) = target_rows([rss], summaries, [])
    assert (row["median"], row["from"], row["met"]) == (125.0, "payments_drain", True)
    assert (row["min"], row["max"]) == (90.0, 160.0)


def test_figures_are_written_with_three_significant_digits_and_thousands_separated():
    assert [readable(v) for v in (12_095.0, 64.36, 9.814, 0.012_63, None)] == ["12,095", "64.4", "9.81", "0.0126", "-"]


def test_every_target_names_a_listed_case_or_ratio_and_the_drain_ratio_is_in_the_headline():
    from tests.bench.plan import CASES, RATIOS, TARGETS

    keys = {case.key for case in CASES}
    pairs = {f"{numerator}/{denominator}" for numerator, denominator, *_ in RATIOS}
    for target in TARGETS:
        for source, figure in target.sources:
            assert (figure in pairs) if source == "ratio" else (source in keys), f"{target.what}: {source} {figure}"
    assert {"payments_drain/raw_aiokafka_drain", "eventfleet_batch_hmac/raw_aiokafka", "eventfleet_ed25519/raw_aiokafka"} <= pairs
    assert len(TARGETS) == 8, "the eight figures of issue 17"


def test_the_command_line_sets_the_flows_burst_rate_and_rest_and_leaves_the_other_cases_alone():
    from tests.bench.__main__ import configured
    from tests.bench.plan import CASES

    chosen = {case.key: case for case in configured(CASES, steady_rate=120.0, burst_orders=2000, idle_s=5.0, steady_s=30.0)}
    burst, steady = chosen["flow_capacity"], chosen["flow_steady"]
    assert (burst.orders, burst.idle_s, burst.burst) == (2000, 5.0, True)
    assert "2,000 orders" in burst.title
    assert (steady.rate_per_s, steady.window_s, steady.burst) == (120.0, 30.0, False) and "120 orders/s" in steady.title
    assert chosen["raw_aiokafka"] is next(c for c in CASES if c.key == "raw_aiokafka")


def test_the_readme_tables_show_each_target_and_each_workers_cpu_per_order():
    from tests.bench.markdown import targets_table, workers_table

    summary = lambda median: {"median": median, "min": median, "max": median}  # noqa: E731
    report = {
        "targets": [{"what": "capacity", "compare": ">=", "target": 500.0, "unit": "orders/s", "median": 130.0, "min": 120.0,
                     "max": 140.0, "met": False},
                    {"what": "at rest", "compare": "<=", "target": 0.02, "unit": "cores", "median": None, "min": None,
                     "max": None, "met": None}],
        "cases": [{"number": "5b", "key": "flow_steady", "title": "steady", "summary": {"cpu_ms_per_order_payments": summary(2.47),
                                                                                        "cpu_ms_per_order_tracker": summary(9.81)}},
                  {"number": "2", "key": "raw_aiokafka", "title": "raw", "summary": {"events_per_s": summary(30_000.0)}}],
    }
    rows = targets_table(report).splitlines()
    assert rows[2] == "| capacity | ≥ 500 orders/s | **130** (120–140) orders/s | missed |"
    assert rows[3] == "| at rest | ≤ 0.02 cores | not measured | |"
    workers = workers_table(report).splitlines()
    assert workers[0] == "| worker CPU ms per order | 5b `flow_steady` |"
    assert "| payments | 2.47 |" in workers and "| tracker | 9.81 |" in workers and "| shipping |  |" in workers
