"""`fleet contracts close` and `fleet contracts retire`: when a superseded version may be closed for writing and retired,
as sentences on the pure decision, the lifecycle file they write, and the commands' one-line refusals."""

import json
import os
from datetime import date
from pathlib import Path

import pytest

from contracts import InventoryReserved, OrderPlaced, OrderPlacedV2, Registry, Topic, UnknownTopic
from contracts.registry import with_lifecycle
from fleet.ops import retire as retiring
from fleet.ops.retire import Facts, LifecycleRefused, RetireBlocked, Writer, close, ending, read_lifecycle, refusals, retire, with_entry
from tests.support import assert_fails_in_one_line, run_fleet

REPO = Path(__file__).resolve().parents[2]
V1 = Topic("orders.placed.v1", OrderPlaced, "order_id", "storefront", "Orders.", consumers=("payments",))
V2 = Topic("orders.placed.v2", OrderPlacedV2, "order_id", "storefront", "Orders.", consumers=("payments",))
REGISTRY = Registry([V1, V2])
NOTHING = Facts(lags={}, writers=())
A_DAY = date(2026, 12, 7)


def reasons(facts: Facts, registry: Registry = REGISTRY, **options) -> list[str]:
    return refusals(registry, registry.named("orders.placed.v1"), facts, **options)


# ---- which version may end at all ----------------------------------------------------------------------------------


def test_only_a_superseded_version_may_be_closed_or_retired():
    assert ending(REGISTRY, "orders.placed.v1", "retired") is V1
    with pytest.raises(LifecycleRefused, match=r"orders\.placed\.v2 is the current version of orders\.placed: only a superseded version is retired"):
        ending(REGISTRY, "orders.placed.v2", "retired")
    with pytest.raises(UnknownTopic, match="the registry has: orders.placed.v1, orders.placed.v2"):
        ending(REGISTRY, "orders.placed.v0", "closed")


# ---- the decision: lag, ACLs, the authorizer (pure) -----------------------------------------------------------------


def test_a_version_no_group_lags_on_and_no_acl_lets_anyone_write_may_be_retired():
    assert reasons(NOTHING) == []
    assert reasons(Facts({"orders.placed.v1": {"payments": 0, "tracker": 0}}, ())) == []


def test_a_group_with_lag_on_the_version_refuses_it_naming_the_group_and_its_lag():
    found = reasons(Facts({"orders.placed.v1": {"payments": 3, "tracker": 0}}, ()))
    assert len(found) == 1
    assert "1 consumer group(s) still have records of it to read: payments (3 on orders.placed.v1)" in found[0]
    assert "tracker" not in found[0]


def test_lag_on_a_retry_topic_of_the_version_counts_and_lag_on_another_topic_does_not():
    found = reasons(Facts({"orders.placed.v1.retry.2": {"payments.retry.2": 1}, "orders.placed.v2": {"payments": 50}}, ()))
    assert len(found) == 1 and "payments.retry.2 (1 on orders.placed.v1.retry.2)" in found[0]
    assert reasons(Facts({"orders.placed.v2": {"payments": 50}}, ())) == []


def test_a_refusal_names_the_ten_groups_with_the_most_lag_and_counts_the_others():
    lags = {f"group-{n:02d}": n for n in range(1, 16)}
    found = reasons(Facts({"orders.placed.v1": lags}, ()))[0]
    assert found.startswith("15 consumer group(s) still have records of it to read: group-15 (15 on orders.placed.v1); group-14")
    assert "group-06 (6 on" in found and "group-05" not in found and "; and 5 more;" in found


def test_a_group_with_lag_and_no_upcaster_to_the_current_version_is_said_too():
    unreadable = Registry([V1, Topic("orders.placed.v2", InventoryReserved, "order_id", "storefront", "Orders.")])
    found = reasons(Facts({"orders.placed.v1": {"payments": 2}}, ()), unreadable)
    assert len(found) == 2 and "no upcaster leads from OrderPlaced to InventoryReserved" in found[1]


def test_an_acl_that_lets_a_principal_write_the_version_refuses_it_naming_the_acl():
    writers = (Writer("User:gateway", "WRITE", "orders.placed.v1"), Writer("User:legacy", "ALL", "orders.", "PREFIXED", "10.0.0.7"))
    found = reasons(Facts({}, writers))
    assert found == [
        "ACLs still let 2 principal(s) write it: User:gateway WRITE on TOPIC:orders.placed.v1, User:legacy ALL on "
        "TOPIC:orders.* (prefixed) from 10.0.0.7; `fleet contracts close orders.placed.v1` then `fleet acl apply` takes "
        "the fleet's own away, and the others are yours to remove"
    ]
    assert str(Writer("User:ops", "WRITE", "*")) == "User:ops WRITE on every topic (TOPIC:*)"


def test_a_broker_without_an_authorizer_refuses_unless_told_it_is_known():
    found = reasons(Facts({}, None), broker="the broker at 127.0.0.1:19092")
    assert found == ["the broker at 127.0.0.1:19092 has no authorizer, so no ACL keeps any client from writing it; if "
                     "that is so on purpose (a development broker), retire with --no-acls"]
    assert reasons(Facts({}, None), no_acls=True) == []
    assert len(reasons(Facts({"orders.placed.v1": {"payments": 1}}, None), no_acls=True)) == 1  # lag still refuses


def test_every_reason_is_said_at_once():
    assert len(reasons(Facts({"orders.placed.v1": {"payments": 1}}, None))) == 2


# ---- the lifecycle file ---------------------------------------------------------------------------------------------


def test_an_entry_is_added_in_order_and_the_rest_of_the_document_is_kept():
    document = {"retired": {"orders.placed.v1": "2026-12-01"}, "closed": {"orders.placed.v1": "2026-11-30"}}
    new = with_entry(document, "retired", "inventory.held.v1", "2026-12-07")
    assert new == {"retired": {"inventory.held.v1": "2026-12-07", "orders.placed.v1": "2026-12-01"},
                   "closed": {"orders.placed.v1": "2026-11-30"}}
    assert document["retired"] == {"orders.placed.v1": "2026-12-01"}


def test_a_missing_lifecycle_file_retires_nothing_and_a_broken_one_is_refused(tmp_path):
    assert read_lifecycle(tmp_path / "none.json") == {"retired": {}}
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(LifecycleRefused, match="is not JSON"):
        read_lifecycle(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text('{"retired": []}')
    with pytest.raises(LifecycleRefused, match="is not a lifecycle file"):
        read_lifecycle(tmp_path / "list.json")


def test_the_committed_lifecycle_file_reads_as_the_registry_says():
    assert read_lifecycle(REPO / "contracts" / "lifecycle.json") == json.loads((REPO / "contracts" / "lifecycle.json").read_text())


def test_closing_writes_the_day_and_a_second_close_changes_nothing(tmp_path):
    file = tmp_path / "lifecycle.json"
    file.write_text('{\n  "retired": {}\n}\n')
    assert close("orders.placed.v1", lifecycle_file=file, today=A_DAY).day == "2026-12-07"
    assert file.read_text() == '{\n  "retired": {},\n  "closed": {\n    "orders.placed.v1": "2026-12-07"\n  }\n}\n'
    again = close("orders.placed.v1", lifecycle_file=file, today=date(2026, 12, 9))
    assert again.already and again.day == "2026-12-07"
    assert Registry(with_lifecycle([V1, V2], read_lifecycle(file))).named("orders.placed.v1").closed


def test_closing_the_current_version_is_refused_and_writes_nothing(tmp_path):
    file = tmp_path / "lifecycle.json"
    with pytest.raises(LifecycleRefused):
        close("orders.placed.v2", lifecycle_file=file)
    assert not file.exists()


@pytest.fixture
def broker_says(monkeypatch):
    """`gather` answers with the facts a test gives, and records which topics it was asked about."""
    asked: list[str] = []

    def answer(facts: Facts):
        async def gather(connection, topic):
            asked.append(topic.name)
            return facts

        monkeypatch.setattr(retiring, "gather", gather)
        return asked

    return answer


async def test_retiring_writes_the_day_once_the_broker_says_nothing_reads_or_writes_it(tmp_path, broker_says):
    asked = broker_says(Facts({"orders.placed.v1": {"payments": 0}}, ()))
    file = tmp_path / "lifecycle.json"
    done = await retire("127.0.0.1:9", "orders.placed.v1", lifecycle_file=file, today=A_DAY)
    assert (done.topic, done.day, done.already) == ("orders.placed.v1", "2026-12-07", False) and asked == ["orders.placed.v1"]
    assert read_lifecycle(file) == {"retired": {"orders.placed.v1": "2026-12-07"}}
    retired = Registry(with_lifecycle([V1, V2], read_lifecycle(file))).named("orders.placed.v1")
    assert retired.retired and retired.retired_on == "2026-12-07"


async def test_a_retired_version_is_left_as_it_is_without_asking_the_broker(tmp_path, broker_says):
    asked = broker_says(NOTHING)
    file = tmp_path / "lifecycle.json"
    file.write_text('{"retired": {"orders.placed.v1": "2026-12-01"}}')
    done = await retire("127.0.0.1:9", "orders.placed.v1", lifecycle_file=file, today=A_DAY)
    assert done.already and done.day == "2026-12-01" and asked == []


async def test_a_blocked_retirement_and_a_dry_run_write_nothing(tmp_path, broker_says):
    file = tmp_path / "lifecycle.json"
    broker_says(Facts({"orders.placed.v1": {"payments": 4}}, ()))
    with pytest.raises(RetireBlocked, match=r"^orders\.placed\.v1 is not retired: 1 consumer group\(s\) still have records"):
        await retire("127.0.0.1:9", "orders.placed.v1", lifecycle_file=file)
    broker_says(NOTHING)
    dry = await retire("127.0.0.1:9", "orders.placed.v1", lifecycle_file=file, dry_run=True)
    assert dry.dry_run and not file.exists()


# ---- the commands ---------------------------------------------------------------------------------------------------


def fleet(*args: str, cwd: Path = REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLEET_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    return run_fleet(*args, cwd=cwd, env=env)


@pytest.mark.parametrize("command", ["close", "retire"])
def test_the_current_version_is_refused_in_one_line_exit_64(command):
    line = assert_fails_in_one_line(fleet("contracts", command, "orders.placed.v2"), 64)
    assert line.startswith("orders.placed.v2 is the current version of orders.placed")


@pytest.mark.parametrize("command", ["close", "retire"])
def test_outside_a_checkout_without_lifecycle_the_commands_say_where_to_run_and_exit_66(command, tmp_path):
    line = assert_fails_in_one_line(fleet("contracts", command, "orders.placed.v1", cwd=tmp_path), 66)
    assert f"run `fleet contracts {command}` from the checkout's top folder" in line


def test_retire_with_the_broker_down_says_so_in_one_line_and_writes_nothing(tmp_path):
    file = tmp_path / "lifecycle.json"
    line = assert_fails_in_one_line(fleet("contracts", "retire", "orders.placed.v1", "--lifecycle", str(file)), 69)
    assert "the broker at 127.0.0.1:1 did not answer" in line and not file.exists()


def test_close_writes_the_lifecycle_file_it_is_given_and_says_what_comes_next(tmp_path):
    file = tmp_path / "lifecycle.json"
    done = fleet("contracts", "close", "orders.placed.v1", "--lifecycle", str(file))
    assert done.returncode == 0, done.stderr
    assert list(read_lifecycle(file)["closed"]) == ["orders.placed.v1"]
    assert "then `fleet acl apply`" in done.stdout and "`fleet contracts retire orders.placed.v1`" in done.stdout


def test_retire_says_what_it_found_and_what_comes_next_and_a_dry_run_says_would(tmp_path, broker_says):
    from typer.testing import CliRunner

    from fleet.cli.app import app

    broker_says(Facts({"orders.placed.v1": {"payments": 0}, "orders.placed.v1.retry.1": {"payments.retry.1": 0}}, None))
    file = tmp_path / "lifecycle.json"
    command = ["contracts", "retire", "orders.placed.v1", "--lifecycle", str(file), "--no-acls", "--bootstrap", "127.0.0.1:9"]
    dry = CliRunner().invoke(app, [*command, "--dry-run"])
    assert dry.exit_code == 0 and dry.stdout.startswith("would retire orders.placed.v1 since ") and not file.exists()
    done = CliRunner().invoke(app, command)
    day = read_lifecycle(file)["retired"]["orders.placed.v1"]
    assert done.exit_code == 0 and done.stdout == (
        f"retired orders.placed.v1 since {day} in {file}: none of the 2 consumer group(s) that read it has lag on it, and "
        "the broker has no authorizer (--no-acls); next: commit it, `fleet docs gen`, `fleet acl apply`, and deploy the workers\n")
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0 and again.stdout == f"orders.placed.v1 is retired already (since {day}): nothing to do\n"
