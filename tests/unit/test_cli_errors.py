"""Every `fleet` command as a new user first meets it, with the broker down and without keys: one line on stderr that
says what failed and what to do, the exit code README.md documents, and never a traceback or a library's noise.

Each command runs as a real process from an empty folder. "The broker is down" is FLEET_KAFKA_BOOTSTRAP_SERVERS at a
port where nothing listens; "no keys" is FLEET_KEYS_DIR at an empty folder."""

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.errors import ErrorBoundary, ExitCode
from tests.support import an_order, assert_fails_in_one_line, run_fleet

REPO = Path(__file__).resolve().parents[2]
DEAD_BROKER = "127.0.0.1:1"  # nothing listens there: every connection is refused at once
BROKER_DOWN = f"the broker at {DEAD_BROKER} did not answer"
A_VALID_ORDER = an_order().model_dump_json()


@dataclass
class NewUser:
    """A user in an empty folder, with the environment their shell gives `fleet`."""

    folder: Path
    env: dict[str, str]

    def fleet(self, *args: str, timeout_s: float = 30.0, **env: str):
        return run_fleet(*args, cwd=self.folder, env={**self.env, **env}, timeout_s=timeout_s)


def _new_user(tmp_path: Path, keys_dir: Path) -> NewUser:
    folder = tmp_path / "work"
    folder.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("FLEET_KAFKA_") and name not in ("FLEET_DEBUG", "COLUMNS")
    }
    env |= {
        "PYTHONPATH": str(REPO),
        "FLEET_KAFKA_BOOTSTRAP_SERVERS": DEAD_BROKER,
        "FLEET_KEYS_DIR": str(keys_dir),
        "PAYMENTS_STORE_URL": f"sqlite:///{tmp_path / 'payments.db'}",
        "PAYMENTS_HTTP_PORT": "0",
    }
    return NewUser(folder, env)


@pytest.fixture
def without_keys(tmp_path) -> NewUser:
    """The broker is down, and FLEET_KEYS_DIR is an empty folder: nobody ran `fleet keys init`."""
    empty = tmp_path / "keys"
    empty.mkdir()
    return _new_user(tmp_path, empty)


@pytest.fixture
def with_keys(tmp_path, keys_dir) -> NewUser:
    """The broker is down, but the keys are there (this test run's dev keys)."""
    return _new_user(tmp_path, keys_dir)


def _named(value) -> str | None:
    """A parametrized command's id is its command line."""
    return " ".join(value) if isinstance(value, list) else None


# ---- The broker is down ---------------------------------------------------------------------------------------------

TALK_TO_THE_BROKER = [
    ["topics", "apply"],
    ["topics", "apply", "--dry-run"],
    ["demo", "--orders", "1"],
    ["watch"],
    ["status"],
    ["status", "--watch"],
    ["publish", "orders.placed.v1", "--json", A_VALID_ORDER],
    ["dlq", "ls"],
    ["dlq", "show", "orders.placed.v1"],
    ["dlq", "replay", "orders.placed.v1"],
    ["trace", "flow-1"],
    ["trace", "--order", "ord-1"],
    ["acl", "apply"],
    ["run", "payments"],
    ["pause", "payments"],
    ["resume", "payments", "--topic", "orders.placed.v1"],
]


@pytest.mark.parametrize("command", TALK_TO_THE_BROKER, ids=" ".join)
def test_a_command_with_the_broker_down_says_so_in_one_line_and_exits_69(with_keys, command):
    started = time.monotonic()
    result = with_keys.fleet(*command)
    line = assert_fails_in_one_line(result, ExitCode.UNAVAILABLE)
    assert line.startswith(BROKER_DOWN) and "fleet kafka start" in line, line
    assert time.monotonic() - started < 15, "a broker that is down fails the command at once, not after retries"


def test_topics_apply_with_the_broker_down_says_so_in_one_line(with_keys):
    line = assert_fails_in_one_line(with_keys.fleet("topics", "apply"), ExitCode.UNAVAILABLE)
    assert line == (
        f"{BROKER_DOWN}: KafkaConnectionError: Unable to bootstrap; start it (`fleet kafka start`) or point "
        "FLEET_KAFKA_BOOTSTRAP_SERVERS or --bootstrap at a running one"
    )


def test_bootstrap_given_on_the_command_line_is_the_broker_named(with_keys):
    line = assert_fails_in_one_line(with_keys.fleet("dlq", "ls", "--bootstrap", "127.0.0.1:2"), ExitCode.UNAVAILABLE)
    assert line.startswith("the broker at 127.0.0.1:2 did not answer"), line


# ---- No keys ------------------------------------------------------------------------------------------------------

NEED_KEYS = [
    ["demo", "--orders", "1"],
    ["publish", "orders.placed.v1", "--json", A_VALID_ORDER],
    ["dlq", "replay", "orders.placed.v1"],
    ["keys", "list"],
    ["keys", "public", "payments-1"],
    ["keys", "rotate", "payments"],
    ["run", "payments"],
    ["pause", "payments"],
]


@pytest.mark.parametrize("command", NEED_KEYS, ids=" ".join)
def test_a_command_without_keys_says_to_run_keys_init_and_exits_66(without_keys, command):
    line = assert_fails_in_one_line(without_keys.fleet(*command), ExitCode.NO_INPUT)
    assert "`fleet keys init`" in line, line


def test_run_without_keys_fails_before_it_starts_anything(without_keys):
    result = without_keys.fleet("run", "payments")
    line = assert_fails_in_one_line(result, ExitCode.NO_INPUT)
    assert line == f"no keyring at {without_keys.env['FLEET_KEYS_DIR']}/keyring.json; run `fleet keys init`"
    assert "FastStream app starting" not in result.stdout, "a worker that cannot sign never joins its group"


# ---- Unknown names and bad input ------------------------------------------------------------------------------------

UNKNOWN_NAMES = [
    (["publish", "orders.placed.v9", "--json", "{}"], "unknown topic 'orders.placed.v9'; the registry has: "),
    (["dlq", "ls", "orders.placed.v9"], "unknown topic 'orders.placed.v9'"),
    (["dlq", "show", "orders.placed.v9"], "unknown topic 'orders.placed.v9'"),
    (["dlq", "replay", "orders.placed.v9"], "unknown topic 'orders.placed.v9'"),
    (["run", "billing"], "unknown service 'billing'; the fleet has the workers payments"),
    (["up", "billing"], "unknown service(s) billing; the fleet has: payments"),
    (["status", "billing"], "unknown service(s) billing; the fleet has: payments"),
    (["scale", "billing=2"], "unknown service 'billing'; the fleet has: payments"),
    (["docs", "gen", "--service", "billing"], "unknown service 'billing'"),
    (["acl", "plan", "--service", "billing"], "unknown user(s) billing; the fleet's users are payments"),
    (["keys", "public", "no-such-kid"], "no key 'no-such-kid' in the keyring"),
    (["keys", "init", "--alg", "rsa"], "unknown algorithm 'rsa'; use one of"),
    (["pause", "billing"], "unknown service 'billing'; the fleet has the workers payments"),
    (["pause", "gateway"], "gateway consumes nothing from Kafka; only the workers obey: payments"),
    (["resume", "payments", "--topic", "shipments.scheduled.v1"], "payments does not read shipments.scheduled.v1; it reads orders.placed.v1"),
]


@pytest.mark.parametrize(("command", "says"), UNKNOWN_NAMES, ids=_named)
def test_an_unknown_topic_service_user_or_key_is_named_with_what_there_is_and_exits_64(with_keys, command, says):
    line = assert_fails_in_one_line(with_keys.fleet(*command), ExitCode.BAD_INPUT)
    assert says in line, line


def test_a_gateway_client_for_an_unknown_topic_is_refused_in_one_line(with_keys, tmp_path):
    result = with_keys.fleet(
        "gateway", "add-client", "acme", "--topic", "orders.nope.v1", "--clients-file", str(tmp_path / "c.json")
    )
    assert "unknown topic 'orders.nope.v1'" in assert_fails_in_one_line(result, ExitCode.BAD_INPUT)


BAD_INPUT = [
    (["scale", "payments"], ExitCode.BAD_INPUT, "'payments': expected SERVICE=N, e.g. payments=3"),
    (["up", "--scale", "payments=many"], ExitCode.BAD_INPUT, "'payments=many': expected SERVICE=N"),
    (["trace"], ExitCode.BAD_INPUT, "give a correlation id or --order ORDER_ID (one of the two)"),
    (["trace", "flow-1", "--since", "last week"], ExitCode.BAD_INPUT, "--since 'last week' is neither a duration"),
    (
        ["topics", "apply", "--min-insync-replicas", "2"],
        ExitCode.BAD_INPUT,
        "--min-insync-replicas 2 > --replication-factor 1",
    ),
    (["publish", "orders.placed.v1", "--json", "not json"], ExitCode.BAD_EVENT, "invalid OrderPlaced: (value): "),
    (["topic", "apply"], ExitCode.USAGE, "No such command 'topic'. Did you mean 'topics'?"),
    (["topics", "apply", "--replication-factor", "0"], ExitCode.USAGE, "Invalid value for '--replication-factor'"),
    (["--no-such-option"], ExitCode.USAGE, "No such option: --no-such-option"),
]


@pytest.mark.parametrize(("command", "code", "says"), BAD_INPUT, ids=_named)
def test_bad_input_is_one_line_that_names_it(with_keys, command, code, says):
    assert says in assert_fails_in_one_line(with_keys.fleet(*command), code)


def test_publish_names_every_invalid_field_on_its_one_line(with_keys):
    result = with_keys.fleet("publish", "orders.placed.v1", "--json", json.dumps({"order_id": "o-1", "currency": "eu"}))
    line = assert_fails_in_one_line(result, ExitCode.BAD_EVENT)
    for field in ("customer_id", "items", "currency", "total_cents", "placed_at"):
        assert f"{field}: " in line, line


def test_incomplete_kafka_security_settings_are_named_and_exit_2(with_keys):
    result = with_keys.fleet("topics", "apply", FLEET_KAFKA_SECURITY_PROTOCOL="SASL_SSL")
    line = assert_fails_in_one_line(result, ExitCode.USAGE)
    assert line.startswith("Kafka connection settings: SASL_SSL needs a password for 'admin'"), line


def test_a_setting_that_does_not_validate_is_named_and_exits_2(with_keys):
    line = assert_fails_in_one_line(with_keys.fleet("run", "payments", PAYMENTS_HTTP_PORT="eighty"), ExitCode.USAGE)
    assert line.startswith("invalid PaymentsSettings: http_port: "), line


# ---- The local fleet ----------------------------------------------------------------------------------------------


def test_up_while_a_fleet_runs_here_says_so_and_exits_75(with_keys):
    state = with_keys.folder / ".fleet" / "fleet.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"pid": os.getpid(), "bootstrap": DEAD_BROKER, "replicas": []}))  # a live pid
    line = assert_fails_in_one_line(with_keys.fleet("up"), ExitCode.TRY_AGAIN)
    assert line == f"a fleet already runs from .fleet (pid {os.getpid()}); `fleet down` stops it"


def test_scale_without_a_running_fleet_says_to_start_one_and_exits_1(with_keys):
    line = assert_fails_in_one_line(with_keys.fleet("scale", "payments=2"), ExitCode.FAILED)
    assert line == "no local fleet is running (no live `fleet up` in .fleet/fleet.json); start one with `fleet up`"


def test_down_without_a_running_fleet_has_nothing_to_stop_and_succeeds(with_keys):
    result = with_keys.fleet("down")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.strip().endswith(": nothing to stop")


# ---- --debug, and bugs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [["--debug"], []], ids=["--debug", "FLEET_DEBUG=1"])
def test_debug_shows_the_traceback_and_still_exits_with_the_documented_code(with_keys, debug):
    result = with_keys.fleet(*debug, "topics", "apply", **({} if debug else {"FLEET_DEBUG": "1"}))
    assert result.returncode == ExitCode.UNAVAILABLE
    assert "Traceback (most recent call last)" in result.stderr and "KafkaConnectionError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(BROKER_DOWN), "the one line still comes last"


def _a_buggy_app():
    import typer

    app = typer.Typer(cls=ErrorBoundary)

    @app.command()
    def divide(by: int) -> None:
        typer.echo(str(1 / by))

    @app.command()
    def other() -> None:  # a second command keeps `divide` a subcommand, as every `fleet` command is
        pass

    return app


def test_a_bug_shows_its_traceback_and_exits_70():
    result = CliRunner().invoke(_a_buggy_app(), ["divide", "0"])
    assert result.exit_code == ExitCode.INTERNAL
    assert "Traceback (most recent call last)" in result.stderr and "ZeroDivisionError" in result.stderr
    assert "internal error (ZeroDivisionError), a bug: please report it" in result.stderr


# ---- The table ------------------------------------------------------------------------------------------------------


def test_the_exit_codes_are_the_workers_own_where_they_share_a_meaning():
    from fleet.ops.runner import EXIT_PRODUCER_LOST
    from fleet.runtime.access import EXIT_ACCESS_DENIED

    assert ExitCode.REFUSED == EXIT_ACCESS_DENIED and ExitCode.TRY_AGAIN == EXIT_PRODUCER_LOST


def test_readme_documents_every_exit_code():
    section = (REPO / "README.md").read_text().split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| `?(\d+)`? \|", section, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}, section


def test_the_error_boundary_adds_nothing_to_a_successful_command(with_keys):
    result = with_keys.fleet("acl", "plan", "--service", "payments")
    assert result.returncode == 0 and result.stderr == "" and "User:payments" in result.stdout
