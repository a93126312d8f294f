"""`fleet replay` plans a move of a service's consumer group from what the broker says: pure, partition by partition;
and the command prints the plan, moves nothing on a dry run, and refuses in one line."""

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from contracts import PartitionOffset
from fleet.cli.app import app
from fleet.ops import replay as replay_ops
from fleet.ops.replay import KEPT_FOR_GOOD, Move, PartitionFacts, ReplayRefused, plan_replay

ORDERS = "orders.placed.v1"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(hours=2)
WEEK_MS = 7 * 24 * 3600 * 1000


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def partition(number: int = 0, *, committed: int | None = 140, beginning: int = 0, end: int = 140,
              first_since: int | None = 95, oldest: datetime | None = NOW - timedelta(days=3),
              topic: str = ORDERS) -> PartitionFacts:
    """A partition as the broker describes it; by default the group has handled all of it, 45 records since SINCE."""
    return PartitionFacts(topic, number, committed, beginning, end, first_since, ms(oldest) if oldest else None)


def plan(*facts: PartitionFacts, since: datetime = SINCE, retention_ms: int = WEEK_MS, topics=(ORDERS,)):
    return plan_replay("payments", "payments", topics, facts, {t: retention_ms for t in topics}, since=since, now=NOW)


# ---- Where each partition goes ---------------------------------------------------------------------------------------


def test_a_replay_moves_the_group_back_to_the_first_record_appended_at_or_after_the_moment():
    replay = plan(partition(0, committed=140, first_since=95), partition(1, committed=80, first_since=70, end=80))
    assert [(m.name, m.current, m.target, m.read_again) for m in replay.moves] == [
        ("orders.placed.v1[0]", 140, 95, 45),
        ("orders.placed.v1[1]", 80, 70, 10),
    ]
    assert replay.read_again == 55


def test_it_says_for_each_partition_where_the_group_moves_from_and_to_and_how_many_records_it_reads_again():
    replay = plan(partition(2, committed=140, first_since=95), partition(3, committed=1, first_since=0, end=1))
    assert replay.lines() == [
        "orders.placed.v1[2]: 140 → 95 (45 records to read again)",
        "orders.placed.v1[3]: 1 → 0 (1 record to read again)",
        "46 records to read again on 2 of 2 partitions (group payments, from 2026-12-05T10:00:00.000Z)",
    ]


def test_the_seek_carries_only_the_partitions_that_move():
    replay = plan(partition(0, committed=140, first_since=95), partition(1, committed=80, first_since=None, end=80))
    assert replay.offsets() == (PartitionOffset(topic=ORDERS, partition=0, offset=95),)
    assert replay.targets() == {(ORDERS, 0): 95}


def test_a_partition_without_a_record_since_the_moment_goes_to_its_end_so_a_group_at_its_end_stays():
    stays = plan(partition(0, committed=140, end=140, first_since=None)).moves[0]
    assert (stays.target, stays.moves, stays.read_again) == (140, False, 0)
    assert str(stays) == "orders.placed.v1[0]: stays at 140 (nothing handled since the moment)"


def test_a_group_is_never_moved_forward_past_records_it_has_not_handled_yet():
    """The group is at 50 and the moment's first record is at 95: moving would skip 45 records never handled."""
    behind = plan(partition(0, committed=50, end=140, first_since=95)).moves[0]
    assert not behind.moves and behind.read_again == 0
    assert str(behind) == (
        "orders.placed.v1[0]: stays at 50 (it has not reached the moment yet; moving to 95 would skip 45 records "
        "not handled yet)"
    )
    assert plan(partition(0, committed=50, end=140, first_since=95)).offsets() == ()


def test_a_partition_the_group_never_committed_stays_since_a_new_group_reads_it_from_its_first_offset():
    never = plan(partition(0, committed=None, beginning=12, first_since=95)).moves[0]
    assert (never.current, never.moves, never.never_committed) == (12, False, True)
    assert "never committed" in str(never)


def test_a_moment_exactly_on_a_partition_s_committed_offset_moves_nothing():
    assert plan(partition(0, committed=95, first_since=95)).to_move == ()


# ---- What is refused -------------------------------------------------------------------------------------------------


def test_a_moment_in_the_future_is_refused():
    with pytest.raises(ReplayRefused, match="in the future"):
        plan(partition(), since=NOW + timedelta(seconds=1))


def test_a_moment_older_than_the_topic_s_retention_is_refused_and_says_from_when_it_may_replay():
    with pytest.raises(ReplayRefused, match=r"older than orders.placed.v1's retention \(7d\).*2026-11-28T12:00:00.000Z"):
        plan(partition(), since=NOW - timedelta(days=8))


def test_a_moment_just_inside_the_retention_is_accepted():
    assert plan(partition(), since=NOW - timedelta(days=7) + timedelta(seconds=1)).to_move


def test_a_topic_kept_for_good_is_replayed_from_any_moment():
    assert plan(partition(), since=NOW - timedelta(days=3650), retention_ms=KEPT_FOR_GOOD).to_move


def test_a_moment_before_the_oldest_record_left_on_a_partition_that_lost_records_is_refused():
    """Its first 500 records are deleted and what is left begins after the moment: what lay between may be gone."""
    lost = partition(0, beginning=500, end=700, committed=700, first_since=500, oldest=SINCE + timedelta(minutes=5))
    with pytest.raises(ReplayRefused, match=r"older than what orders.placed.v1\[0\] still holds.*first 500 records"):
        plan(lost)


def test_a_partition_that_never_lost_a_record_is_replayed_from_its_start_however_early_the_moment():
    young = partition(0, beginning=0, committed=30, end=30, first_since=0, oldest=SINCE + timedelta(minutes=5))
    assert plan(young).moves[0] == Move(ORDERS, 0, 30, 0)


def test_a_partition_that_lost_records_older_than_the_moment_only_is_replayed():
    kept = partition(0, beginning=500, end=700, committed=700, first_since=650, oldest=SINCE - timedelta(hours=1))
    assert plan(kept).moves[0].read_again == 50


# ---- The command -----------------------------------------------------------------------------------------------------


def fleet(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def broker_says(monkeypatch):
    """The broker's facts without a broker, and a record of every move carried out."""
    carried: list = []

    def answer(*facts: PartitionFacts, retention_ms: int = WEEK_MS):
        async def gather_facts(connection, group, topics, since):
            return list(facts), {t: retention_ms for t in topics}

        monkeypatch.setattr(replay_ops, "gather_facts", gather_facts)
        return carried

    async def carry_out(connection, signer, keyring, plan, **options):
        carried.append(plan)

    monkeypatch.setattr(replay_ops, "carry_out", carry_out)
    return answer


def test_a_dry_run_prints_the_plan_and_moves_nothing(broker_says):
    carried = broker_says(partition(0, committed=140, first_since=95))
    result = fleet("replay", "payments", "--since", "2h", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "orders.placed.v1[0]: 140 → 95 (45 records to read again)" in result.output
    assert result.output.rstrip().endswith("dry run: nothing moved") and carried == []


def test_a_replay_with_nothing_to_move_issues_no_command(broker_says, keys_dir):
    carried = broker_says(partition(0, committed=140, first_since=None))
    result = fleet("replay", "payments", "--since", "2h")
    assert result.exit_code == 0, result.output
    assert "nothing to move" in result.output and carried == []


def test_a_replay_carries_its_plan_out(broker_says, keys_dir):
    carried = broker_says(partition(0, committed=140, first_since=95))
    assert fleet("replay", "payments", "--since", "2h").exit_code == 0
    assert [p.targets() for p in carried] == [{(ORDERS, 0): 95}]


@pytest.mark.parametrize(("since", "says"), [("2099-01-01T00:00:00Z", "in the future"), ("yesterday", "neither"),
                                             ("30d", "older than orders.placed.v1's retention")])
def test_a_moment_that_cannot_be_replayed_from_is_refused_in_one_line_with_exit_64(broker_says, since, says):
    carried = broker_says(partition())
    result = fleet("replay", "payments", "--since", since, "--dry-run")
    assert result.exit_code == 64 and says in result.output and carried == []
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "says"), [(["gateway"], "consumes nothing"), (["nobody"], "nobody"),
                                            (["payments", "--topic", "payments.authorized.v1"], "does not read")])
def test_a_service_or_topic_that_cannot_be_replayed_is_refused_with_exit_64(broker_says, args, says):
    result = fleet("replay", *args, "--since", "2h", "--dry-run")
    assert result.exit_code == 64 and says in result.output
