"""The bench's pure figures: medians and spreads of runs, ratios, parsing Kafka's tools, the table, the events."""

import json

import pytest

from tests.bench.events import EVENT_BYTES, event_key, event_value
from tests.bench.stats import (
    format_table,
    parse_consumer_performance,
    parse_producer_performance,
    ratio,
    summarize,
)

PRODUCER_OUTPUT = """\
SLF4J: No SLF4J providers were found.
99856 records sent, 19971.2 records/sec (9.52 MB/sec), 1200.3 ms avg latency, 1650.0 ms max latency.
200000 records sent, 41476.565741 records/sec (19.78 MB/sec), 1155.02 ms avg latency, 1674.00 ms max latency, 1186 ms 50th, 1581 ms 95th, 1640 ms 99th, 1670 ms 99.9th.
"""

CONSUMER_OUTPUT = """\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-11-24 21:20:01:123, 2026-11-24 21:20:04:456, 9.5367, 2.8612, 20000, 6000.6000, 2950, 383, 24.9000, 52219.3211
"""


def test_summarize_gives_the_median_and_the_min_max_spread():
    summary = summarize([30.0, 10.0, 20.0])
    assert summary["median"] == 20.0
    assert (summary["min"], summary["max"], summary["spread"]) == (10.0, 30.0, 20.0)
    assert summary["spread_pct"] == pytest.approx(100.0)
    assert summary["runs"] == [30.0, 10.0, 20.0]  # in the order they ran


def test_summarize_an_even_count_averages_the_middle_two():
    assert summarize([4, 1, 3, 2])["median"] == 2.5


def test_summarize_one_run_has_no_spread():
    summary = summarize([7])
    assert (summary["median"], summary["spread"], summary["spread_pct"]) == (7.0, 0.0, 0.0)


def test_summarize_refuses_no_runs():
    with pytest.raises(ValueError):
        summarize([])


def test_summarize_a_zero_median_has_no_relative_spread():
    assert summarize([0, 0, 0])["spread_pct"] is None


def test_ratio_of_medians_and_the_widest_range_the_runs_allow():
    fast, slow = summarize([90, 100, 110]), summarize([40, 50, 60])
    r = ratio(slow, fast)
    assert r["median"] == pytest.approx(0.5)
    assert r["min"] == pytest.approx(40 / 110)
    assert r["max"] == pytest.approx(60 / 90)


def test_ratio_refuses_a_zero_denominator():
    with pytest.raises(ValueError):
        ratio(summarize([1]), summarize([0, 1, 2]))


def test_parse_producer_performance_takes_the_final_summary():
    figures = parse_producer_performance(PRODUCER_OUTPUT)
    assert figures["records"] == 200000
    assert figures["records_per_s"] == pytest.approx(41476.565741)
    assert figures["mb_per_s"] == pytest.approx(19.78)
    assert figures["avg_latency_ms"] == pytest.approx(1155.02)
    assert (figures["p50_ms"], figures["p99_ms"], figures["p999_ms"]) == (1186, 1640, 1670)


def test_parse_producer_performance_without_a_summary_fails_loudly():
    with pytest.raises(ValueError, match="no ProducerPerformance summary"):
        parse_producer_performance("Exception in thread main\n")


def test_parse_consumer_performance_pairs_headers_and_values():
    figures = parse_consumer_performance("SLF4J: noise\n" + CONSUMER_OUTPUT)
    assert figures["data.consumed.in.nMsg"] == 20000
    assert figures["fetch.nMsg.sec"] == pytest.approx(52219.3211)
    assert figures["rebalance.time.ms"] == 2950
    assert figures["start.time"] == "2026-11-24 21:20:01:123"  # a timestamp stays text


def test_parse_consumer_performance_without_values_fails_loudly():
    with pytest.raises(ValueError, match="no ConsumerPerformance"):
        parse_consumer_performance(CONSUMER_OUTPUT.splitlines()[0])


def test_format_table_aligns_summaries_numbers_text_and_missing_cells():
    rows = [
        {"number": "1a", "title": "Broker ceiling", "rate": summarize([41000, 42000, 40000]), "cpu": None},
        {"number": "3", "title": "FastStream", "rate": summarize([1500.4]), "cpu": 512.34},
    ]
    table = format_table(rows, [("number", "#", 0), ("title", "case", 0), ("rate", "events/s", 0), ("cpu", "CPU µs", 1)])
    lines = table.splitlines()
    assert lines[0].split() == ["#", "case", "events/s", "CPU", "µs"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "41,000 [40,000–42,000]" in lines[2] and lines[2].endswith("-")
    assert "1,500 [1,500–1,500]" in lines[3] and lines[3].endswith("512.3")
    assert lines[2].startswith("1a  Broker ceiling") and lines[3].startswith("3   FastStream")
    assert len(lines[2]) == len(lines[3])  # the figures are right-aligned to one width


def test_format_table_right_aligns_a_column_with_no_figure_yet():
    table = format_table([{"a": "x", "b": None}, {"a": "yyyy", "b": None}], [("a", "case", 0), ("b", "events per second", 0)])
    assert table.splitlines()[2] == "x" + " " * 3 + "  " + " " * 16 + "-"


def test_every_event_is_the_stated_size_and_valid_json():
    for seq in (0, 7, 123_456, 99_999_999):
        value = event_value(seq)
        assert len(value) == EVENT_BYTES
        assert json.loads(value)["seq"] == seq
    assert event_key(5) == event_key(5 + 997)


def test_the_steady_rate_counts_only_the_time_every_process_was_handling():
    from tests.bench.stats import steady_rate

    early = [0.0, 1.0, 2.0, 3.0, 4.0]  # alone from 0 to 2, then with the other until 4
    late = [2.0, 2.5, 3.0, 3.5, 4.0, 9.0]  # alone after 4
    # Between 2 and 4: three of early's (2, 3, 4) and five of late's: 8 events, 7 intervals over 2 s.
    assert steady_rate([early, late]) == pytest.approx(3.5)
    assert steady_rate([early]) == pytest.approx(1.0), "one process: its own first-to-last rate"
    assert steady_rate([[0.0, 1.0], [5.0, 6.0]]) is None, "spans that never overlap give no steady rate"


def test_the_processes_of_one_group_add_up_to_one_figure_set():
    from tests.bench.cases import combine_processes

    runs = [{"first": 10.0, "last": 14.0, "cpu_window_s": 1.0, "handled": 3, "handled_at": [10.0, 11.0, 12.0]},
            {"first": 10.5, "last": 15.0, "cpu_window_s": 2.0, "handled": 3, "handled_at": [10.5, 11.5, 14.5]}]
    processes = [{"process_cpu_s": 2.0, "peak_rss_mib": 70.0}, {"process_cpu_s": 3.0, "peak_rss_mib": 90.0}]
    figures = combine_processes(runs, processes, events=6)
    assert figures["window_s"] == 5.0 and figures["events_per_s"] == pytest.approx(1.2)
    assert figures["cpu_us_per_event"] == pytest.approx(0.5e6) and figures["process_cpu_us_per_event"] == pytest.approx(5 / 6 * 1e6)
    assert figures["peak_rss_mib"] == 90.0 and figures["handled_per_process"] == [3, 3]
    assert all("handled_at" not in p for p in figures["per_process"]), "the long lists stay out of the report"


def test_a_process_that_got_no_partition_before_the_others_were_done_counts_as_idle_not_as_a_failure():
    from tests.bench.cases import combine_processes

    runs = [{"first": 10.0, "last": 12.0, "cpu_window_s": 1.0, "handled": 4, "handled_at": [10.0, 10.5, 11.0, 11.5]},
            {"first": None, "last": None, "cpu_window_s": 0.0, "handled": 0, "handled_at": []}]
    figures = combine_processes(runs, [{"process_cpu_s": 1.0, "peak_rss_mib": 70.0}] * 2, events=4)
    assert figures["events_per_s"] == 2.0 and figures["handled_per_process"] == [4, 0]
    assert figures["steady_events_per_s"] == pytest.approx(2.0), "the one process that worked sets the pace"


def test_the_readme_table_shows_each_case_with_its_range_and_the_flow_with_its_latency():
    from tests.bench.markdown import figures_table, ratios_table

    summary = lambda median, low, high: {"median": median, "min": low, "max": high}  # noqa: E731
    report = {"cases": [
        {"number": "3", "title": "Plain FastStream", "summary": {"events_per_s": summary(900, 850, 990), "cpu_us_per_event": summary(700, 690, 720),
                                                                 "peak_rss_mib": summary(51, 50, 52)}},
        {"number": "5b", "title": "Order flow", "summary": {"events_per_s": summary(20, 20, 20), "p50_ms": summary(41, 40, 45),
                                                            "p99_ms": summary(88, 80, 95), "max_ms": summary(120, 110, 130),
                                                            "max_worker_peak_rss_mib": summary(80, 79, 81)}},
        {"number": "6", "title": "Two processes", "summary": {}},
    ], "ratios": [{"what": "HMAC / plain", "median": 1.5, "min": 1.2, "max": 1.9}]}
    rows = figures_table(report).splitlines()
    assert rows[2] == "| 3 | Plain FastStream | 900 (850–990) | 700 | 51 |  |"
    assert rows[3] == "| 5b | Order flow | 20 (20–20) |  | 80 | 41 / 88 / 120 |"
    assert rows[4].startswith("| 6 | Two processes | failed |")
    assert "| HMAC / plain | **1.50** | 1.20–1.90 |" in ratios_table(report)


def test_a_processs_peak_rss_is_its_own_high_water_mark_not_the_size_of_the_bench_that_forked_it(tmp_path):
    import sys

    from tests.bench.cases import _process_figures, run_process

    ballast = bytearray(200 * 1024 * 1024)  # this process: 200 MiB more than the child will ever hold
    ballast[::4096] = b"\1" * len(ballast[::4096])
    child = "import time; data = bytearray(40 * 1024 * 1024); data[::4096] = b'\\1' * len(data[::4096]); time.sleep(0.4)"
    outcome = run_process([sys.executable, "-c", child], log=tmp_path / "child.log", timeout_s=30)
    figures = _process_figures(outcome, events=1)
    assert 40 <= figures["peak_rss_mib"] < 120, "the child's VmHWM: its 40 MiB and an interpreter"
    assert figures["wait4_maxrss_mib"] >= 200, "Linux carries the forking process's peak across exec into ru_maxrss"
    del ballast
