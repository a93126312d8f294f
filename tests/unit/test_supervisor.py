"""The supervisor backs off between restarts of a crashing replica, up to a cap."""

from fleet.supervisor import backoff_delay


def test_restart_delays_double_from_half_a_second():
    assert [backoff_delay(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]


def test_restart_delays_are_capped():
    assert backoff_delay(50) == 30.0
