"""Liveness and readiness as pure decisions on a fake clock: stuck fails, slow or absent brokers do not, lag and
missing partitions keep a worker out of service."""

from fleet.runtime.observe.health import Progress, WorkSince, liveness, readiness

BOUND = 120.0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _live(progress: Progress, clock: FakeClock, lag: int = 0, work: WorkSince | None = None, **kwargs):
    work = work or WorkSince()
    return liveness(now=clock(), bound_s=BOUND, oldest_in_flight_s=progress.oldest_in_flight_s(),
                    last_progress=progress.last_progress, lag=lag, work_since=work.observe(lag, clock()), **kwargs)


def test_a_handler_in_flight_past_the_bound_fails_liveness_and_passes_again_once_it_finishes():
    clock = FakeClock()
    progress = Progress(clock)
    progress.started("on_order_placed")
    clock.advance(BOUND - 1)
    assert _live(progress, clock).ok
    clock.advance(2)
    stuck = _live(progress, clock)
    assert not stuck.ok and stuck.reason == "handler_stuck"
    assert stuck.body()["status"] == "fail" and stuck.body()["oldest_in_flight_s"] == BOUND + 1
    progress.finished("on_order_placed")
    assert _live(progress, clock).ok


def test_the_oldest_of_several_handlers_in_flight_is_the_one_that_counts():
    clock = FakeClock()
    progress = Progress(clock)
    progress.started("a")
    clock.advance(100)
    progress.started("b")
    clock.advance(30)
    assert progress.oldest_in_flight_s() == 130
    assert _live(progress, clock).reason == "handler_stuck"
    progress.finished("a")
    assert progress.oldest_in_flight_s() == 30 and _live(progress, clock).ok


def test_a_quiet_worker_with_no_work_stays_live_however_long_it_waits():
    clock = FakeClock()
    progress = Progress(clock)
    clock.advance(10 * BOUND)
    verdict = _live(progress, clock, lag=0)
    assert verdict.ok and verdict.reason == "ok"


def test_work_waiting_with_no_progress_past_the_bound_fails_liveness_while_the_broker_answers():
    clock = FakeClock()
    progress, work = Progress(clock), WorkSince()
    assert _live(progress, clock, lag=5, work=work).ok  # the lag is first seen now
    clock.advance(BOUND + 1)
    verdict = _live(progress, clock, lag=5, work=work)
    assert not verdict.ok and verdict.reason == "no_progress" and verdict.facts["lag"] == 5


def test_a_slow_or_absent_broker_never_fails_liveness():
    clock = FakeClock()
    progress, work = Progress(clock), WorkSince()
    _live(progress, clock, lag=5, work=work)
    clock.advance(10 * BOUND)
    verdict = _live(progress, clock, lag=5, work=work, broker_reachable=False)
    assert verdict.ok and verdict.reason == "waiting_for_broker"


def test_progress_while_lagging_keeps_a_busy_worker_live():
    clock = FakeClock()
    progress, work = Progress(clock), WorkSince()
    for _ in range(10):
        assert _live(progress, clock, lag=500, work=work).ok
        clock.advance(BOUND / 2)
        progress.started("s")
        progress.finished("s")
    assert _live(progress, clock, lag=500, work=work).ok


def test_work_arriving_after_a_long_quiet_spell_is_not_taken_for_a_long_stall():
    clock = FakeClock()
    progress, work = Progress(clock), WorkSince()
    clock.advance(10 * BOUND)  # an hour of quiet: last progress is old
    assert _live(progress, clock, lag=0, work=work).ok
    assert _live(progress, clock, lag=1, work=work).ok  # a record arrives: its wait counts from now
    clock.advance(BOUND - 1)
    assert _live(progress, clock, lag=1, work=work).ok
    clock.advance(2)
    assert _live(progress, clock, lag=1, work=work).reason == "no_progress"


def test_lag_going_back_to_zero_resets_when_work_was_first_seen():
    work = WorkSince()
    assert work.observe(3, 10.0) == 10.0 and work.observe(7, 20.0) == 10.0
    assert work.observe(0, 30.0) is None and work.observe(1, 40.0) == 40.0


def _ready(**overrides):
    facts = dict(stopping=False, connected=True, unassigned=[], lag=0, unknown=[], threshold=1000) | overrides
    return readiness(**facts)


def test_ready_when_connected_assigned_and_caught_up_enough():
    verdict = _ready(lag=999)
    assert verdict.ok and verdict.body() == {"status": "ok", "reason": "ok", "detail": "999 records behind", "lag": 999, "lag_threshold": 1000}


def test_not_ready_for_each_reason_with_the_reason_named():
    assert _ready(lag=1000).reason == "lagging"
    assert _ready(lag=5000).body()["status"] == "fail"
    assert _ready(unassigned=["payments (orders.placed.v1)"]).reason == "not_assigned"
    assert "payments (orders.placed.v1)" in _ready(unassigned=["payments (orders.placed.v1)"]).detail
    assert _ready(unknown=["orders.placed.v1/0"]).reason == "lag_unknown"
    assert _ready(connected=False).reason == "broker_unreachable"
    assert _ready(stopping=True, connected=False).reason == "stopping"
    assert not any(_ready(**bad).ok for bad in ({"lag": 1000}, {"unassigned": ["x"]}, {"unknown": ["t/0"]}, {"connected": False}, {"stopping": True}))


def test_a_paused_worker_with_waiting_records_stays_live_however_long_nothing_is_handled():
    clock = FakeClock()
    progress, work = Progress(clock), WorkSince()
    _live(progress, clock, lag=50, work=work)
    clock.advance(BOUND * 10)
    assert not _live(progress, clock, lag=50, work=work).ok, "without the pause it would be stuck"
    verdict = _live(progress, clock, lag=50, work=work, paused=True)
    assert verdict.ok and verdict.reason == "paused"


def test_a_paused_worker_is_not_ready_and_says_how_it_is_held():
    verdict = readiness(stopping=False, connected=True, unassigned=[], lag=0, unknown=[], threshold=1000,
                        paused="paused (every topic) by alice: database down")
    assert not verdict.ok and verdict.reason == "paused" and "database down" in verdict.detail
    assert readiness(stopping=False, connected=True, unassigned=[], lag=0, unknown=[], threshold=1000).ok
