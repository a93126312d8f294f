"""The side-by-side pair (make bench-pair): which value runs when, and how its ratio is read from the runs."""

from tests.bench.pair import abba, paired_ratios


def test_the_values_alternate_in_abba_order_so_neither_always_runs_first():
    assert abba(3) == [0, 1, 1, 0, 0, 1]
    assert abba(0) == []


def test_each_pair_gives_second_over_first_whichever_ran_first():
    runs = [{"side": 0, "shipped_per_s": 40.0}, {"side": 1, "shipped_per_s": 20.0},
            {"side": 1, "shipped_per_s": 30.0}, {"side": 0, "shipped_per_s": 60.0}]
    assert paired_ratios(runs) == [0.5, 0.5]


def test_a_pair_without_a_figure_on_its_first_value_is_left_out_rather_than_divided_by_zero():
    runs = [{"side": 0, "shipped_per_s": None}, {"side": 1, "shipped_per_s": 20.0},
            {"side": 0, "shipped_per_s": 10.0}, {"side": 1, "shipped_per_s": 0.0}]
    assert paired_ratios(runs) == [0.0]
