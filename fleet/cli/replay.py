"""`fleet replay`: a service reads again what its input topics received since a moment, its consumer group moved back
to the first record at or after it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import typer

from contracts import Keyring, PrivateKey
from contracts.connection import KafkaConnection
from fleet.cli.errors import CliError, ExitCode
from fleet.cli.options import BootstrapOption, keys_dir

__all__ = ["replay"]


def replay(
    service: str = typer.Argument(..., help="A worker, e.g. payments."),
    since: str = typer.Option(
        ...,
        "--since",
        help="From this long ago (2h, 90m, 1d) or this time (2026-12-05T09:00:00Z): the first record appended at or "
        "after it is read again, and all that follows.",
    ),
    topic: list[str] | None = typer.Option(
        None, "--topic", help="Only this topic the service reads (repeatable); default: every topic it reads."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would move, and move nothing."),
    timeout: float = typer.Option(
        60.0, "--timeout", min=1.0, help="Seconds the running replicas have to take the new offsets."
    ),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Move SERVICE's consumer group back, on every partition of its input topics, to the first offset at or after
    --since (Kafka's offsets-for-times), the service paused around the move; print each partition's move and how many
    records will be read again. A group is never moved forward. With the inbox, an event handled before has no second
    effect: a replay feeds read models again and gives events that failed before a fix another chance."""
    from fleet.catalog import group_of
    from fleet.ops.control import checked_topics, topics_read_by
    from fleet.ops.timeline import parse_since
    from fleet.runtime.settings import operator_connection

    now = datetime.now(UTC)
    # An unknown service, the gateway or a topic it does not read: exit 64, before anything else is asked.
    topics = list(checked_topics(service, topic or [])) or topics_read_by(service)
    try:
        moment = parse_since(since, now)
    except ValueError as error:  # neither a duration nor a time, or a time in the future
        raise CliError(str(error), ExitCode.BAD_INPUT) from error
    keys = None if dry_run else _operator_keys()  # no operator key: exit 66, before the broker is asked anything
    asyncio.run(
        _replay(
            operator_connection(bootstrap), service, group_of(service), topics, moment, now, keys, timeout_s=timeout
        )
    )


def _operator_keys() -> tuple[PrivateKey, Keyring]:
    """The operators' signing key and the keyring to read the standing orders with."""
    from fleet.runtime.keys import OPERATOR_SIGNER, KeyStore, keyring_path

    signer = KeyStore.for_signer(keys_dir(), OPERATOR_SIGNER).signer()
    return signer, KeyStore(keyring_path(keys_dir())).keyring()


async def _replay(
    connection: KafkaConnection,
    service: str,
    group: str,
    topics: list[str],
    moment: datetime,
    now: datetime,
    keys: tuple[PrivateKey, Keyring] | None,
    *,
    timeout_s: float,
) -> None:
    """Gathers the facts, prints the plan (a refusal is one line, exit 64), and carries it out unless a dry run."""
    from fleet.ops.replay import carry_out, gather_facts, plan_replay

    facts, retention = await gather_facts(connection, group, topics, moment)
    plan = plan_replay(service, group, topics, facts, retention, since=moment, now=now)
    typer.echo("\n".join(plan.lines()))
    if keys is None:
        typer.echo("dry run: nothing moved")
        return
    if not plan.to_move:
        typer.echo(f"nothing to move: group {group} stays where it is, and {service} was not paused")
        return
    signer, keyring = keys
    await carry_out(connection, signer, keyring, plan, say=typer.echo, timeout_s=timeout_s)
