"""The `fleet` command's one error boundary: an expected failure is one line on stderr and a documented exit code."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any

import typer
from typer.core import TyperGroup

# Since 0.26 Typer vendors Click as typer._click and no longer depends on Click: the UsageError it raises is
# typer._click's, not click's (a `click` in the environment, e.g. uvicorn's, is another copy whose classes Typer never
# raises), and Typer's public API has no UsageError. So the private module it is; an older Typer used Click itself.
try:
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover (the older Typer)
    from click import exceptions as click_errors  # type: ignore[no-redef]

__all__ = [
    "CliError",
    "ErrorBoundary",
    "ExitCode",
    "as_cli_error",
    "debug_requested",
    "one_line",
    "report",
    "run_as_process",
]


class ExitCode(IntEnum):
    """What `fleet` exits with (README.md, "Exit codes", has the same table); sysexits.h's codes where one fits."""

    OK = 0
    FAILED = 1  # the command ran and reports what it found: `fleet check`'s problems, no trace, no fleet to scale
    USAGE = 2  # the command line does not parse, or the Kafka settings in the environment are incomplete or invalid
    BAD_INPUT = 64  # EX_USAGE: an unknown topic, service, user, key or algorithm; a malformed argument (SERVICE=N)
    BAD_EVENT = 65  # EX_DATAERR: the event given is not JSON or does not validate (every error, on the one line)
    NO_INPUT = 66  # EX_NOINPUT: no keyring or signing key in FLEET_KEYS_DIR; no broker log; no contracts/ here
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the broker did not answer (down, elsewhere, too slow)
    INTERNAL = 70  # EX_SOFTWARE: a bug; its traceback is printed
    TRY_AGAIN = 75  # EX_TEMPFAIL: a fleet already runs, or did not answer in time; `fleet run` lost a producer
    REFUSED = 78  # EX_CONFIG: Kafka refused the login or an ACL (fleet.runtime.access.EXIT_ACCESS_DENIED)


class CliError(Exception):
    """An expected failure a command reports: what failed and what to do, and the code `fleet` exits with."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def debug_requested(ctx: typer.Context | None = None) -> bool:
    """`fleet --debug ...` or FLEET_DEBUG=1: a failure shows its traceback, and the libraries' logs are not silenced."""
    root = ctx.find_root() if ctx is not None else None
    if root is not None and root.params.get("debug"):
        return True
    return os.environ.get("FLEET_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


# ---- Which exceptions are expected, and how each is said ------------------------------------------------------------


def _loaded(module: str, name: str) -> type | None:
    found = sys.modules.get(module)
    return getattr(found, name, None) if found is not None else None


def one_line(error: BaseException) -> str:
    """An error's message on one line: pydantic's ValidationError as `field: problem; ...`, others' lines joined."""
    if (kind := _loaded("pydantic", "ValidationError")) is not None and isinstance(error, kind):
        from contracts import describe_errors

        invalid: Any = error  # a pydantic ValidationError: its model's title, and each field's error
        return f"invalid {invalid.title}: {describe_errors(invalid)}"
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _invalid_settings(error: Any) -> str:
    return f"{one_line(error)} (check the environment's FLEET_* and <SERVICE>_* variables)"


# Exceptions raised below the CLI that are expected failures: (module, class, exit code, its one line). A class is
# looked up only if its module is already imported: an error cannot be an instance of a class that never loaded, and
# so the failure path imports nothing (no catalog, no services) just to find out.
EXPECTED: tuple[tuple[str, str, ExitCode, Callable[[Any], str]], ...] = (
    ("fleet.runtime.access", "KafkaAccessDenied", ExitCode.REFUSED, str),
    ("contracts.connection", "ConnectionSettingsError", ExitCode.USAGE, lambda e: f"Kafka connection settings: {e}"),
    ("contracts.signing", "SigningKeyError", ExitCode.NO_INPUT, str),
    ("contracts.registry", "UnknownTopic", ExitCode.BAD_INPUT, str),
    ("contracts.registry", "RetiredTopic", ExitCode.BAD_INPUT, str),
    ("fleet.catalog", "UnknownService", ExitCode.BAD_INPUT, str),
    ("fleet.runtime.asyncapi", "UnknownService", ExitCode.BAD_INPUT, str),
    ("fleet.ops.control", "NotAWorker", ExitCode.BAD_INPUT, str),
    ("fleet.ops.control", "UnknownTopicOfService", ExitCode.BAD_INPUT, str),
    ("fleet.ops.replay", "ReplayRefused", ExitCode.BAD_INPUT, str),
    ("fleet.ops.replay", "TopicsMissing", ExitCode.FAILED, str),
    ("fleet.ops.replay", "ReplayNotApplied", ExitCode.TRY_AGAIN, str),
    ("fleet.catalog", "NotRebuildable", ExitCode.BAD_INPUT, str),
    ("fleet.ops.rebuild_stores", "StoreNotRebuildable", ExitCode.BAD_INPUT, str),
    ("fleet.ops.rebuild_stores", "NoLiveStore", ExitCode.NO_INPUT, str),
    ("fleet.ops.rebuild", "RebuildIncomplete", ExitCode.FAILED, str),
    ("fleet.ops.rebuild", "ServiceKeptMoving", ExitCode.TRY_AGAIN, str),
    ("fleet.ops.bump", "BumpRefused", ExitCode.BAD_INPUT, str),
    ("fleet.ops.bump", "BumpFailed", ExitCode.FAILED, str),
    ("fleet.ops.retire", "LifecycleRefused", ExitCode.BAD_INPUT, str),
    ("fleet.ops.retire", "RetireBlocked", ExitCode.FAILED, str),
    ("fleet.ops.up", "FleetAlreadyRunning", ExitCode.TRY_AGAIN, str),
    ("fleet.ops.up", "NoFleetRunning", ExitCode.FAILED, str),
    ("pydantic", "ValidationError", ExitCode.USAGE, _invalid_settings),
)

# aiokafka's ways of saying that no broker answered (down, wrong address, too slow): the broker is unavailable.
UNANSWERED = (
    "KafkaConnectionError",
    "KafkaTimeoutError",
    "RequestTimedOutError",
    "NodeNotReadyError",
    "NoBrokersAvailable",
)


def _broker_address() -> str:
    """Where the failed command looked for the broker: the operator's connection, else the worker's settings."""
    from fleet.runtime.settings import KafkaSettings, last_operator_connection

    if (connection := last_operator_connection()) is not None:
        return str(connection)
    try:
        return KafkaSettings().bootstrap_servers
    except Exception:  # settings that do not even validate: the address is unknown, the error still says the rest
        return os.environ.get("FLEET_KAFKA_BOOTSTRAP_SERVERS", "?")


def _unanswered(error: BaseException) -> CliError:
    text = str(error)
    detail = text if text.startswith(type(error).__name__) else f"{type(error).__name__}: {text}".rstrip(": ")
    detail = re.sub(r" from \[\(.*\)\]$", "", detail)  # aiokafka's resolved address tuples: the address is said once
    return CliError(
        f"the broker at {_broker_address()} did not answer: {detail}; start it (`fleet kafka start`) or point "
        "FLEET_KAFKA_BOOTSTRAP_SERVERS or --bootstrap at a running one",
        ExitCode.UNAVAILABLE,
    )


def _refused_login(error: BaseException) -> CliError | None:
    """aiokafka says "Unable to bootstrap" for a refused password too: log in once to tell which it was."""
    import asyncio

    from fleet.runtime.access import KafkaAccessDenied, authenticate
    from fleet.runtime.settings import last_operator_connection

    connection = last_operator_connection()
    if connection is None or not connection.secure:
        return None
    try:
        asyncio.run(authenticate(connection))
    except KafkaAccessDenied as denial:
        return CliError(str(denial), ExitCode.REFUSED)
    return None


def as_cli_error(error: BaseException) -> CliError | None:
    """The one line and exit code of an expected failure; None for anything else (a bug)."""
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:  # a task group's only failure
        return as_cli_error(error.exceptions[0])
    if isinstance(error, CliError):
        return error
    for module, name, code, say in EXPECTED:
        if (kind := _loaded(module, name)) is not None and isinstance(error, kind):
            return CliError(say(error), code)
    kafka_errors = sys.modules.get("aiokafka.errors")
    if kafka_errors is not None:
        if isinstance(error, tuple(getattr(kafka_errors, name) for name in UNANSWERED)):
            return _refused_login(error) or _unanswered(error)
        if isinstance(error, kafka_errors.KafkaError):
            return CliError(f"the broker at {_broker_address()} refused the request: {error}", ExitCode.FAILED)
        if isinstance(error, (TimeoutError, ConnectionError)):  # a Kafka client's own wait or socket gave up
            return _unanswered(error)
    if isinstance(error, OSError):  # a file or folder the command needs: its path and what is wrong with it
        return CliError(str(error), ExitCode.FAILED)
    return None


# ---- The boundary ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _libraries_quiet(debug: bool) -> Iterator[None]:
    """aiokafka's own error lines ("Unable connect to ...") would repeat the one line `fleet` prints. `fleet run` and
    `fleet up` configure logging for their workers, and get aiokafka's warnings back into their event stream."""
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    if not debug:
        kafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        kafka_log.setLevel(level)  # as it was: a command run inside a test leaves the test's process as it found it


class _Outcome:
    """What `run_as_process` needs to know once the command is over."""

    expected_failure = False  # one was reported without --debug: the process ends without the libraries' leftovers


def _silence_the_aftermath() -> None:
    """After an expected failure nothing else reaches stderr as the process ends: not the clients a failed start left
    for the garbage collector ("Unclosed AIOKafkaConsumer"), not asyncio's "Task was destroyed", no ResourceWarning."""
    for name in ("aiokafka", "asyncio"):
        logging.getLogger(name).disabled = True
    warnings.simplefilter("ignore")


def report(error: BaseException, *, debug: bool) -> int:
    """Prints a failure as `fleet` shows it and returns the code to exit with."""
    expected = as_cli_error(error)
    if expected is None:
        traceback.print_exception(error)
        typer.secho(
            f"fleet: internal error ({type(error).__name__}), a bug: please report it with the traceback above",
            fg=typer.colors.RED,
            err=True,
        )
        return int(ExitCode.INTERNAL)
    if debug:  # the traceback, and whatever the libraries say after it (an unclosed client is worth seeing then)
        traceback.print_exception(error)
    else:
        _Outcome.expected_failure = True
    typer.secho(expected.message, fg=typer.colors.RED, err=True)
    return int(expected.code)


def run_as_process(app: typer.Typer) -> None:
    """`fleet` as a process (its `main`): runs the app, and after an expected failure lets nothing else reach stderr
    until the process has ended."""
    try:
        app()
    finally:
        if _Outcome.expected_failure:
            _silence_the_aftermath()


def _one_line_usage(error: Any, command: str) -> typer.Exit:
    """A command line that does not parse is an expected failure too: one line, and `--help` for the rest."""
    command = error.ctx.command_path if getattr(error, "ctx", None) is not None else command
    typer.secho(f"{command}: {error.format_message()} (see `{command} --help`)", fg=typer.colors.RED, err=True)
    return typer.Exit(int(ExitCode.USAGE))


# `fleet topics` alone shows the group's help (no_args_is_help): a UsageError to Click, not a failure to us.
SHOWS_HELP: tuple[type[Exception], ...] = tuple(
    kind for kind in [getattr(click_errors, "NoArgsIsHelpError", None)] if kind is not None
)
# Typer's own ways out, which pass the boundary as they are: `typer.Exit(code)`, --help, Ctrl-C, a group's own help.
TYPERS_WAYS_OUT: tuple[type[Exception], ...] = (typer.Exit, typer.Abort, *SHOWS_HELP)


class ErrorBoundary(TyperGroup):
    """The root command (and each group run on its own): every failure below it leaves through `report`."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except SHOWS_HELP:
            raise
        except click_errors.UsageError as error:  # `fleet --bogus`: before any command runs
            raise _one_line_usage(error, info_name or "fleet") from None

    def invoke(self, ctx: Any) -> Any:  # Click's Context
        debug = debug_requested(ctx)
        with _libraries_quiet(debug):  # while the command runs, and while its failure is looked into
            try:
                return super().invoke(ctx)
            except TYPERS_WAYS_OUT:
                raise
            except click_errors.UsageError as error:  # `fleet topics aply`, a missing argument, an option out of range
                raise _one_line_usage(error, ctx.command_path) from None
            except Exception as error:
                raise typer.Exit(report(error, debug=debug)) from None
