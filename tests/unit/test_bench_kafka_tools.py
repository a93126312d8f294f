"""Case 1a's warm-up (tests/bench/kafka_tools.py): the arguments, and the steady-state line parsed from real output."""

import pytest

from tests.bench.kafka_tools import parse_producer_performance_steady, producer_performance_args
from tests.bench.stats import parse_producer_performance

# kafka-tools 4.3.1 ProducerPerformance, captured verbatim on the 2-CPU dev VM (a throwaway broker, topic of 6
# partitions, a loaded machine): --num-records 200000 --warmup-records 50000 --record-size 500 --throughput -1
# --reporting-interval 1000.
WARMED_UP_OUTPUT = """\
SLF4J: Failed to load class "org.slf4j.impl.StaticLoggerBinder".
SLF4J: Defaulting to no-operation (NOP) logger implementation
SLF4J: See http://www.slf4j.org/codes.html#StaticLoggerBinder for further details.
Warmup first 50000 records. Steady state results will print after the complete test summary.
1 records sent, 1.0 records/sec (0.00 MB/sec), 80.0 ms avg latency, 80.0 ms max latency.
10475 records sent, 10381.6 records/sec (4.95 MB/sec), 229.4 ms avg latency, 1034.0 ms max latency.
16320 records sent, 16190.5 records/sec (7.72 MB/sec), 670.8 ms avg latency, 871.0 ms max latency.
In steady state.
1 records sent, 0.9 records/sec (0.00 MB/sec), 1138.0 ms avg latency, 1138.0 ms max latency.
29787 records sent, 25612.2 records/sec (12.21 MB/sec), 707.5 ms avg latency, 1131.0 ms max latency.
28608 records sent, 27640.6 records/sec (13.18 MB/sec), 1221.1 ms avg latency, 1541.0 ms max latency.
42816 records sent, 42816.0 records/sec (20.42 MB/sec), 1459.1 ms avg latency, 1686.0 ms max latency.
33824 records sent, 33689.2 records/sec (16.06 MB/sec), 1374.3 ms avg latency, 1589.0 ms max latency.
200000 records sent, 20510.716850 records/sec (9.78 MB/sec), 1131.97 ms avg latency, 1760.00 ms max latency, 1267 ms 50th, 1651 ms 95th, 1714 ms 99th, 1750 ms 99.9th.
150000 steady state records sent, 24307.243559 records/sec (11.59 MB/sec), 1265.64 ms avg latency, 1760.00 ms max latency, 1380 ms 50th, 1670 ms 95th, 1719 ms 99th, 1752 ms 99.9th.
"""

# The same tool without --reporting-interval (default 5000 ms): too short a run for any steady progress line.
WITHOUT_PROGRESS_LINES = """\
Warmup first 50000 records. Steady state results will print after the complete test summary.
200000 records sent, 33624.747814 records/sec (16.03 MB/sec), 696.37 ms avg latency, 1106.00 ms max latency, 730 ms 50th, 1007 ms 95th, 1072 ms 99th, 1102 ms 99.9th.
150000 steady state records sent, 37678.975132 records/sec (17.97 MB/sec), 822.28 ms avg latency, 1106.00 ms max latency, 855 ms 50th, 1025 ms 95th, 1081 ms 99th, 1105 ms 99.9th.
"""


def test_the_steady_state_line_is_parsed_under_the_keys_of_the_whole_run_parser():
    figures = parse_producer_performance_steady(WARMED_UP_OUTPUT)
    assert figures["records"] == 150_000 and figures["records_per_s"] == pytest.approx(24307.243559)
    assert (figures["mb_per_s"], figures["avg_latency_ms"], figures["max_latency_ms"]) == (11.59, 1265.64, 1760.0)
    assert (figures["p50_ms"], figures["p95_ms"], figures["p99_ms"], figures["p999_ms"]) == (1380, 1670, 1719, 1752)
    assert set(parse_producer_performance(WARMED_UP_OUTPUT)) <= set(figures)  # a drop-in for case 1a


def test_the_whole_run_and_the_warm_up_are_kept_beside_it():
    figures = parse_producer_performance_steady(WARMED_UP_OUTPUT)
    assert figures["warmup_records"] == 50_000
    assert (figures["total_records"], figures["total_records_per_s"]) == (200_000, pytest.approx(20510.71685))


def test_the_whole_run_parser_still_reads_the_whole_run_line_of_a_warmed_up_output():
    assert parse_producer_performance(WARMED_UP_OUTPUT)["records"] == 200_000


def test_the_steady_progress_lines_after_the_drain_give_an_unbiased_median():
    figures = parse_producer_performance_steady(WARMED_UP_OUTPUT)
    # After "In steady state.": 0.9 (the warm-up's queue draining), then 25612.2, 27640.6, 42816.0, 33689.2.
    assert figures["steady_windows"] == 4
    assert figures["steady_window_records_per_s"] == pytest.approx((27640.6 + 33689.2) / 2)
    assert figures["steady_window_records_per_s"] > figures["records_per_s"]  # the summary's window includes the drain


def test_without_steady_progress_lines_there_is_no_window_median():
    figures = parse_producer_performance_steady(WITHOUT_PROGRESS_LINES)
    assert figures["records_per_s"] == pytest.approx(37678.975132)
    assert "steady_window_records_per_s" not in figures


def test_an_output_without_a_warm_up_is_refused():
    plain = "20000 records sent, 8602.150538 records/sec (4.10 MB/sec), 752.73 ms avg latency, 1129.00 ms max latency, 742 ms 50th, 1078 ms 95th, 1125 ms 99th, 1129 ms 99.9th.\n"
    with pytest.raises(ValueError, match="steady-state"):
        parse_producer_performance_steady(plain)


def options(args: list[str]) -> dict[str, str]:
    return dict(zip(args[::2], args[1::2]))  # every argument here is an option with one value


def test_the_arguments_run_at_least_200000_records_with_a_warm_up_of_at_most_a_quarter():
    value = options(producer_performance_args("bench.in", 20_000, 500, "127.0.0.1:29492"))
    assert (value["--num-records"], value["--warmup-records"], value["--record-size"]) == ("200000", "50000", "500")
    assert (value["--throughput"], value["--bootstrap-server"], value["--reporting-interval"]) == ("-1", "127.0.0.1:29492", "1000")
    big = options(producer_performance_args("bench.in", 1_000_000, 500, "b"))
    assert (big["--num-records"], big["--warmup-records"]) == ("1000000", "50000")
    assert options(producer_performance_args("bench.in", 100, 500, "b", min_records=100))["--warmup-records"] == "25"
