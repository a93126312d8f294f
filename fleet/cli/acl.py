"""`fleet acl ...`: the Kafka ACLs each of the fleet's users needs, planned from the code and applied to the broker."""

from __future__ import annotations

import asyncio
from typing import List

import typer

from fleet.cli.errors import CliError, ExitCode
from fleet.cli.options import BootstrapOption

__all__ = ["acl_app"]

acl_app = typer.Typer(
    help="Kafka ACLs per service, derived from the registry and the services' wiring.", no_args_is_help=True
)
AclUsersOption = typer.Option(
    None, "--service", help="Only these users: workers, gateway or upstream systems (repeatable)."
)


def _chosen_acls(service: List[str] | None) -> tuple[list, list[str]]:
    from fleet.catalog import WORKERS, service_wiring
    from fleet.ops.acls import fleet_acls, fleet_users

    users = list(fleet_users())
    chosen = service or users
    unknown = sorted(set(chosen) - set(users))
    if unknown:
        raise CliError(
            f"unknown user(s) {', '.join(unknown)}; the fleet's users are {', '.join(users)}", ExitCode.BAD_INPUT
        )
    return fleet_acls(service_wiring([s for s in chosen if s in WORKERS]), services=chosen), chosen


@acl_app.command("plan")
def acl_plan(service: List[str] | None = AclUsersOption) -> None:
    """Print the ACLs each user needs: a worker reads its input topics in its groups, writes its outputs and the retry
    and dead-letter topics of its inputs; gateway and upstream systems write the topics they own; nothing else."""
    for acl in _chosen_acls(service)[0]:
        typer.echo(str(acl))


@acl_app.command("apply")
def acl_apply(
    service: List[str] | None = AclUsersOption,
    bootstrap: str | None = BootstrapOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be added and removed, change nothing."),
) -> None:
    """Make the broker's ACLs for the fleet's users exactly `fleet acl plan`: add what is missing, remove what they no
    longer need (other principals' ACLs are never touched). Connects as an operator (admin on the local secure broker)."""  # noqa: E501 (the command's help, line for line)
    from fleet.ops.acls import apply_acls
    from fleet.runtime.settings import operator_connection

    desired, users = _chosen_acls(service)
    connection = operator_connection(bootstrap)
    plan = asyncio.run(apply_acls(connection, desired, users, dry_run=dry_run))
    verb = "would " if dry_run else ""
    for acl in plan.add:
        typer.echo(f"{verb}add    {acl}")
    for acl in plan.remove:
        typer.echo(f"{verb}remove {acl}")
    typer.echo(
        f"{connection}: {len(plan.add)} {verb}added, {len(plan.remove)} {verb}removed, {len(plan.keep)} unchanged"
    )
