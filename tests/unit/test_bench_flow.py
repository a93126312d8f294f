"""Bench case 5's pure parts: percentiles, the open-loop schedule, pairing orders with shipments, /proc parsing, figures."""

import pytest

from contracts import REGISTRY
from tests.bench.flow import (
    busy_pct,
    cpu_jiffies_of_proc_stat,
    FlowLatency,
    cpu_ticks_of_stat,
    due_times,
    fleet_groups,
    hop_latencies,
    latency_summary,
    order_count,
    pair_latencies,
    percentile,
    throughput_per_s,
    vm_hwm_kib_of_status,
    worker_figures,
)


def test_percentile_is_the_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0.5) == 1


def test_percentile_is_a_value_that_occurred_never_an_interpolation():
    assert percentile([10.0, 20.0], 50) == 10.0
    assert percentile([10.0, 20.0], 51) == 20.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_refuses_nothing_and_out_of_range():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_sorts_first():
    summary = latency_summary([30.0, 10.0, 20.0, 1000.0])
    assert summary == {"count": 4, "min_ms": 10.0, "p50_ms": 20.0, "p90_ms": 1000.0, "p99_ms": 1000.0, "max_ms": 1000.0,
                       "mean_ms": 265.0}
    assert latency_summary([]) == {"count": 0}


def test_due_times_are_an_open_loop_schedule():
    assert due_times(4, 200.0, 10.0) == pytest.approx([10.0, 10.005, 10.01, 10.015])
    with pytest.raises(ValueError):
        due_times(3, 0.0, 0.0)


def test_order_count_covers_the_window_within_the_bench_events():
    assert order_count(200.0, 20_000) == 4000  # 20 s at 200/s
    assert order_count(2000.0, 20_000) == 20_000  # capped by the bench's event count
    assert order_count(0.01, 20_000) == 1


def test_pairing_keeps_only_this_runs_orders_and_names_the_missing():
    starts = {"a": 1000.0, "b": 1010.0, "c": 1020.0}
    ends = {"a": 1050.0, "c": 1021.0, "warm-up": 5.0}
    paired, missing = pair_latencies(starts, ends)
    assert paired == {"a": 50.0, "c": 1.0}
    assert missing == ["b"]


def test_hops_are_the_gaps_between_broker_timestamps_along_the_flow():
    stamps = {"orders.placed.v1": {"a": 0.0}, "payments.authorized.v1": {"a": 10.0},
              "inventory.reserved.v1": {"a": 25.0}, "shipments.scheduled.v1": {"a": 31.0}}
    hops = hop_latencies(stamps, ["a"])
    assert (hops["payments"]["max_ms"], hops["inventory"]["max_ms"], hops["shipping"]["max_ms"]) == (10.0, 15.0, 6.0)


def test_cpu_ticks_read_utime_and_stime_past_a_command_with_spaces_and_parens():
    # proc(5): pid (comm) state ppid ... field 14 utime, field 15 stime.
    fields = ["S"] + [str(n) for n in range(4, 14)] + ["1234", "56"] + ["0"] * 30
    stat = "4242 (python (fleet) run) " + " ".join(fields)
    assert cpu_ticks_of_stat(stat) == 1234 + 56


def test_vm_hwm_is_the_peak_resident_set():
    status = "Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t   75300 kB\nVmRSS:\t   70000 kB\n"
    assert vm_hwm_kib_of_status(status) == 75300
    assert vm_hwm_kib_of_status("Name:\tzombie\n") is None


def test_worker_figures_per_process_and_summed():
    figures = worker_figures({"payments-1": 1.0, "tracker-1": 2.0}, {"payments-1": 1.5, "tracker-1": 4.0},
                             {"payments-1": 80 * 1024, "tracker-1": 100 * 1024}, orders=1000)
    assert figures["workers"]["payments-1"]["cpu_us_per_order"] == pytest.approx(500.0)
    assert figures["workers"]["tracker-1"]["peak_rss_mib"] == 100.0
    assert figures["cpu_us_per_event"] == pytest.approx(2500.0)
    assert figures["max_worker_peak_rss_mib"] == 100.0


def test_fleet_groups_include_every_retry_tier():
    groups = fleet_groups(["shipping"], lambda service: service, REGISTRY)
    assert groups["shipping"] == ["inventory.reserved.v1"]
    assert groups["shipping.retry.1"] == ["inventory.reserved.v1.retry.1"]
    assert set(groups) == {"shipping", "shipping.retry.1", "shipping.retry.2", "shipping.retry.3"}, "no group reads control"


def test_the_case_takes_its_rate_from_the_main_program():
    case = FlowLatency()
    assert case.rate_per_s is None and (case.key, case.number, case.phase) == ("end_to_end_latency", "5", "flow")
    halved = case.with_rate(321.0)
    assert halved.rate_per_s == 321.0 and case.rate_per_s is None  # a copy: the listed case is unchanged


def test_machine_busy_share_counts_idle_and_iowait_as_not_busy():
    before = cpu_jiffies_of_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n")
    after = cpu_jiffies_of_proc_stat("cpu  250 0 150 800 100 0 0 0 0 0\n")
    assert before == (200, 1000)
    assert busy_pct(before, after) == pytest.approx(200 / 300 * 100)


def test_throughput_is_events_per_second_between_the_first_and_the_last():
    assert throughput_per_s([0.0, 500.0, 1000.0, 1500.0, 2000.0]) == pytest.approx(2.0)  # 4 gaps in 2 s
    assert throughput_per_s([3000.0, 1000.0, 2000.0]) == pytest.approx(1.0)
    assert throughput_per_s([5.0]) is None


def test_an_orders_terminal_outcome_is_its_earliest_record_on_a_terminal_topic():
    from tests.bench.flow import terminal_outcomes

    stamps = {"payments.authorized.v1": {"a": 5.0}, "shipments.scheduled.v1": {"a": 30.0, "b": 40.0},
              "payments.declined.v1": {"c": 7.0}, "inventory.backordered.v1": {"b": 35.0}}
    assert terminal_outcomes(stamps) == {"a": ("shipments.scheduled.v1", 30.0), "b": ("inventory.backordered.v1", 35.0),
                                         "c": ("payments.declined.v1", 7.0)}


def test_a_notification_is_known_by_its_template_and_tells_the_customer_of_the_terminal_outcome():
    from tests.bench.flow import template_of, told_stamps

    assert template_of(b'{"order_id":"ord-1","template":"shipment_scheduled"}') == "shipment_scheduled"
    assert template_of(b'{"template":"payment_authorized"}') == "payment_authorized"
    assert template_of(b'{"template":"something_else"}') is None
    terminals = {"a": ("shipments.scheduled.v1", 30.0), "b": ("shipments.scheduled.v1", 31.0), "c": ("payments.declined.v1", 7.0)}
    told = {"payment_authorized": {"a": 12.0, "b": 13.0}, "shipment_scheduled": {"a": 45.0}, "payment_declined": {"c": 9.0}}
    assert told_stamps(terminals, told) == {"a": 45.0, "c": 9.0}, "b was told of its payment, not yet of its shipment"


def test_a_bursts_capacity_is_its_orders_over_the_first_placed_to_the_last_terminal_outcome():
    from tests.bench.flow import burst_capacity_per_s

    placed = {"a": 1000.0, "b": 1001.0, "c": 1002.0, "d": 1003.0}
    done = {"a": 1500.0, "b": 2000.0, "c": 3000.0, "d": 2500.0}
    assert burst_capacity_per_s(placed, done) == pytest.approx(4 / 2.0)  # 4 orders, 1000 → 3000 ms
    assert burst_capacity_per_s(placed, {"a": 1500.0, "b": 2000.0}) == pytest.approx(2 / 1.0), "a lost order is not counted"
    assert burst_capacity_per_s(placed, {}) is None


def test_the_fleet_at_rest_is_the_cores_its_workers_used_summed():
    from tests.bench.flow import cores_used

    before = {"payments-1": 10.0, "tracker-1": 20.0}
    after = {"payments-1": 10.1, "tracker-1": 20.3}
    assert cores_used(before, after, seconds=20.0) == pytest.approx(0.4 / 20)
    with pytest.raises(ValueError):
        cores_used(before, after, seconds=0.0)


def test_cpu_per_order_is_given_for_each_service_and_its_replicas_add_up():
    from tests.bench.flow import cpu_ms_per_order_by_service

    workers = {"payments-1": {"cpu_us_per_order": 1500.0}, "payments-2": {"cpu_us_per_order": 500.0},
               "notifications-1": {"cpu_us_per_order": 4200.0}}
    assert cpu_ms_per_order_by_service(workers) == pytest.approx({"payments": 2.0, "notifications": 4.2})


def test_worker_figures_name_each_services_cpu_per_order_the_busiest_and_the_peak_rss_in_megabytes():
    figures = worker_figures({"payments-1": 1.0, "tracker-1": 2.0}, {"payments-1": 2.0, "tracker-1": 7.0},
                             {"payments-1": 80 * 1024, "tracker-1": 100 * 1024}, orders=1000)
    assert figures["cpu_ms_per_order"] == pytest.approx({"payments": 1.0, "tracker": 5.0})
    assert figures["cpu_ms_per_order_tracker"] == pytest.approx(5.0)
    assert figures["max_worker_cpu_ms_per_order"] == pytest.approx(5.0), "the target is per worker: the busiest one counts"
    assert figures["max_worker_peak_rss_mb"] == pytest.approx(100 * 1024 * 1024 / 1e6), "/proc's kB are KiB; the target is in MB"


def test_a_groups_lag_is_what_it_has_yet_to_commit_and_a_partition_never_committed_counts_whole():
    from tests.bench.flow import group_lag

    ends = {("t", 0): 10, ("t", 1): 5, ("t", 2): 7}
    assert group_lag(ends, {("t", 0): 10, ("t", 1): 5, ("t", 2): 7}) == 0
    assert group_lag(ends, {("t", 0): 8, ("t", 1): -1}) == 2 + 5 + 7
    assert group_lag({("t", 0): 3}, {("t", 0): 9}) == 0, "a commit past the end leaves nothing to go"


def test_a_span_runs_from_the_earliest_start_to_the_latest_end_in_seconds():
    from tests.bench.flow import span_s

    assert span_s([1000.0, 1200.0], [1500.0, 3000.0]) == pytest.approx(2.0)
    assert span_s([], [1.0]) is None


def test_a_burst_waits_longer_for_its_terminal_outcomes_the_more_orders_it_holds():
    from pathlib import Path

    from tests.bench.flow import BURST_BASE_S, SHIPPED_WITHIN_S, FlowRun

    small = FlowRun("127.0.0.1:1", Path("/nowhere"), 1, None, 100, ["payments"])
    large = FlowRun("127.0.0.1:1", Path("/nowhere"), 1, None, 5000, ["payments"])
    steady = FlowRun("127.0.0.1:1", Path("/nowhere"), 1, 250.0, 5000, ["payments"])
    assert BURST_BASE_S < small.shipped_within_s < large.shipped_within_s
    assert steady.shipped_within_s == SHIPPED_WITHIN_S, "at a rate, the wait starts at the last order sent"

