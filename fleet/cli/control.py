"""`fleet pause` and `fleet resume`: hold a service's records where they are, and let them go again."""

from __future__ import annotations

import asyncio

import typer

from fleet.cli.options import BootstrapOption, keys_dir

__all__ = ["pause", "resume"]

TopicOption = typer.Option(
    None, "--topic", help="Only this topic the service reads (repeatable); default: every topic it reads."
)
ReasonOption = typer.Option("", "--reason", help="Why, for whoever looks at `fleet status` next.")
GroupOption = typer.Option(
    None, "--group", help="Only the replicas in this consumer group; default: every replica of the service."
)


def pause(
    service: str = typer.Argument(..., help="A worker, e.g. payments."),
    topic: list[str] | None = TopicOption,
    reason: str = ReasonOption,
    group: str | None = GroupOption,
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Every replica of SERVICE stops fetching (all its topics, or --topic), keeping its group membership and its
    partitions; its records wait on the broker. A replica that starts meanwhile starts paused."""
    _issue(service, "pause", topic or [], reason, group, bootstrap)


def resume(
    service: str = typer.Argument(..., help="A worker, e.g. payments."),
    topic: list[str] | None = TopicOption,
    reason: str = ReasonOption,
    group: str | None = GroupOption,
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Every replica of SERVICE fetches again (all its topics, or --topic), from where it stopped."""
    _issue(service, "resume", topic or [], reason, group, bootstrap)


def _issue(
    service: str, command: str, topics: list[str], reason: str, group: str | None, bootstrap: str | None
) -> None:
    from fleet.ops.control import checked_topics, issue
    from fleet.runtime.keys import OPERATOR_SIGNER, KeyStore
    from fleet.runtime.settings import operator_connection

    checked_topics(service, topics)  # an unknown service, the gateway or a topic it does not read: before the key
    signer = KeyStore.for_signer(keys_dir(), OPERATOR_SIGNER).signer()  # no key: SigningKeyError, exit 66
    envelope = asyncio.run(
        issue(operator_connection(bootstrap), signer, service, command, topics=topics, reason=reason, group=group)
    )
    what = ", ".join(topics) if topics else "every topic it reads"
    typer.echo(f"{command} {service} ({what}): issued as {envelope.id}; every replica obeys between two batches")
