"""Bench case 7a's pure parts: when the payments replica handled its first order, what its group committed, its CPU."""

import json

import pytest

from tests.bench.drain import committed_total, cpu_at, drain_figures, first_handled_s


def _line(**fields) -> str:
    return json.dumps(fields)


def test_the_drain_begins_at_the_first_event_handled_line_of_the_replicas_log():
    lines = [
        "Traceback? no: a line that is not JSON",
        _line(event="store_opened", timestamp="2026-12-04T21:44:09.763193Z"),
        _line(event="event_handled", duration_ms=5.0, timestamp="2026-12-04T21:44:10.500000Z"),
        _line(event="event_handled", duration_ms=5.0, timestamp="2026-12-04T21:44:10.600000Z"),
    ]
    assert first_handled_s(lines) == pytest.approx(1796420650.5)  # 2026-12-04T21:44:10.5Z, in seconds since the epoch
    assert first_handled_s(lines[:2]) is None, "a replica that handled nothing has no first"


def test_a_groups_commits_add_up_over_the_partitions_of_its_topic_only():
    class Meta:
        def __init__(self, offset):
            self.offset = offset

    offsets = {("orders.placed.v1", 0): Meta(400), ("orders.placed.v1", 1): Meta(600), ("orders.placed.v1", 2): Meta(-1),
               ("orders.placed.v1.retry.1", 0): Meta(50)}
    assert committed_total(offsets, "orders.placed.v1") == 1000
    assert committed_total({("orders.placed.v1", 0): 7}, "orders.placed.v1") == 7, "plain offsets too"


def test_the_cpu_at_a_moment_is_that_of_the_last_sample_taken_at_or_before_it():
    samples = [(100.0, 1.0), (100.5, 1.2), (101.0, 1.9)]
    assert cpu_at(samples, 100.7) == 1.2
    assert cpu_at(samples, 101.0) == 1.9
    assert cpu_at(samples, 99.0) == 1.0, "before the first sample: the first"
    with pytest.raises(ValueError):
        cpu_at([], 1.0)


def test_the_drain_rate_is_the_orders_over_first_handled_to_done_and_its_cpu_is_per_order():
    figures = drain_figures(10_000, first_s=100.0, done_s=125.0, cpu_first_s=2.0, cpu_done_s=27.0)
    assert figures["events_per_s"] == pytest.approx(400.0)
    assert figures["window_s"] == pytest.approx(25.0)
    assert figures["cpu_us_per_event"] == pytest.approx(2500.0)
    with pytest.raises(ValueError):
        drain_figures(10, first_s=5.0, done_s=5.0, cpu_first_s=0.0, cpu_done_s=0.0)
