"""`fleet kafka ...`: start, stop, check and read the log of the local Apache Kafka broker."""

from __future__ import annotations

import typer

from fleet.cli.errors import CliError, ExitCode

__all__ = ["kafka_app"]

kafka_app = typer.Typer(
    help="The local Apache Kafka broker (KRaft, single node, 127.0.0.1:9092).", no_args_is_help=True
)


@kafka_app.command("start")
def kafka_start(
    timeout: float = typer.Option(90.0, help="Seconds to wait for the broker to answer."),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="A new broker gets TLS, SASL/SCRAM-SHA-512 (a user per service) and "
        "ACLs (docs/security.md); an existing broker keeps the mode it was formatted with.",
    ),
) -> None:
    """Start the local broker (assembling it from Maven Central the first time); returns when it answers."""
    from fleet.local import kafka as kafka_local

    try:
        from fleet.ops.acls import fleet_users

        typer.echo(kafka_local.start(timeout=timeout, secure=secure or None, users=fleet_users()))
    except Exception as error:  # the launcher's errors carry the broker log's tail: show them, fail the command
        raise CliError(f"the local Kafka broker did not start: {error}", ExitCode.FAILED) from error


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker by its PID."""
    from fleet.local import kafka as kafka_local

    typer.echo(kafka_local.stop())


@kafka_app.command("status")
def kafka_status() -> None:
    """Is the local broker running and answering?"""
    from fleet.local import kafka as kafka_local

    typer.echo(str(kafka_local.status()))


@kafka_app.command("logs")
def kafka_logs(lines: int = typer.Option(200, "--lines", "-n", help="How many lines from the end.")) -> None:
    """Show the end of the local broker's log."""
    from fleet.local import kafka as kafka_local

    path = kafka_local.log_path()
    if not path.exists():
        raise CliError(f"no broker log yet at {path}; `fleet kafka start` starts the local broker", ExitCode.NO_INPUT)
    typer.echo("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
