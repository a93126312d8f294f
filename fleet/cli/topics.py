"""`fleet topics ...`: create or update the registry's topics on the broker."""

from __future__ import annotations

import asyncio

import typer

from fleet.cli.errors import CliError, ExitCode
from fleet.cli.options import BootstrapOption

__all__ = ["topics_app"]

topics_app = typer.Typer(help="Topics from the registry.", no_args_is_help=True)


@topics_app.command("apply")
def topics_apply(
    bootstrap: str | None = BootstrapOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change, change nothing."),
    replication_factor: int = typer.Option(1, "--replication-factor", min=1, help="Replicas of each new topic."),
    min_insync_replicas: int | None = typer.Option(
        None,
        "--min-insync-replicas",
        min=1,
        help="min.insync.replicas of every topic (default: replication factor - 1, at least 1: "
        "1 locally, 2 with 3 replicas).",
    ),
) -> None:
    """Create or update every registry topic (idempotent); prints what it changed (with --dry-run: what it would)."""
    from fleet.ops.topics import apply_topics
    from fleet.runtime.settings import operator_connection

    if min_insync_replicas is not None and min_insync_replicas > replication_factor:
        raise CliError(
            f"--min-insync-replicas {min_insync_replicas} > --replication-factor {replication_factor}: "
            "every acks=all publish would fail",
            ExitCode.BAD_INPUT,
        )
    changes = asyncio.run(
        apply_topics(
            operator_connection(bootstrap),
            replication_factor=replication_factor,
            dry_run=dry_run,
            min_insync_replicas=min_insync_replicas,
        )
    )
    for change in changes:
        typer.echo(("would " if dry_run and change.action != "unchanged" else "") + str(change))
