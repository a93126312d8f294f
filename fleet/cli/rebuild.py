"""`fleet rebuild`: build a service's read model again from its topics, beside the live one, and swap it in."""

from __future__ import annotations

import asyncio

import typer

from fleet.cli.options import BootstrapOption, keys_dir

__all__ = ["rebuild"]


def rebuild(
    service: str = typer.Argument(..., help="A service whose state is a read model: tracker."),
    accept_missing: bool = typer.Option(
        False,
        "--accept-missing",
        help="Swap even if the live model has folded events the topics no longer hold (past their retention) or that "
        "are refused now: their orders lose them. Without it such a rebuild swaps nothing and fails.",
    ),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Build SERVICE's read model again from the start of its topics into a fresh store beside the live one (the live
    one keeps serving), pause SERVICE's group, catch up, swap the two in one transaction (readers such as the gateway
    see the new model at once, no restart, no failed request), resume it. Refuses a service whose store keeps effects
    (payments, inventory, shipping, notifications). Uses <SERVICE>_STORE_URL and <SERVICE>_GROUP_ID as its replicas
    do, and the operator key in FLEET_KEYS_DIR."""
    from fleet.catalog import rebuildable
    from fleet.ops.rebuild import rebuild_read_model
    from fleet.runtime.keys import OPERATOR_SIGNER, KeyStore
    from fleet.runtime.settings import operator_connection

    rebuildable(service)  # an unknown service, or one that cannot be rebuilt: said before a key or a broker is needed
    keys = KeyStore.for_signer(keys_dir(), OPERATOR_SIGNER)  # no keyring: SigningKeyError, exit 66
    asyncio.run(
        rebuild_read_model(operator_connection(bootstrap), service, keys, accept_missing=accept_missing, say=typer.echo)
    )
