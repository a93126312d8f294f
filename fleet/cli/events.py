"""`fleet publish`, `fleet demo`, `fleet watch`: put signed events on the broker, and watch them go by."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import typer

from fleet.cli.errors import CliError, ExitCode
from fleet.cli.options import BootstrapOption, keys_dir

__all__ = ["demo", "publish", "watch"]


def publish(
    topic: str = typer.Argument(..., help="A registry topic, e.g. orders.placed.v2."),
    json_text: str = typer.Option(..., "--json", help="The event as JSON."),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="Private key file to sign with (default: the topic owner's dev key)."
    ),
    correlation_id: str | None = typer.Option(
        None, "--correlation-id", help="The flow this event belongs to (default: a new one)."
    ),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Validate, sign and publish one event; prints its id. Bad input prints every error and exits non-zero."""
    from pydantic import ValidationError

    from contracts import REGISTRY, PrivateKey, SigningKeyError, describe_errors
    from contracts.publisher import Publisher
    from fleet.runtime.keys import KeyStore
    from fleet.runtime.settings import operator_connection

    target = REGISTRY.named(topic)  # UnknownTopic names the registry's topics: exit 64
    try:
        event = target.model.model_validate_json(json_text)
    except ValidationError as error:  # every error, on the one line
        raise CliError(f"invalid {target.model.__name__}: {describe_errors(error)}", ExitCode.BAD_EVENT) from error
    try:
        signer = PrivateKey.load(key_file) if key_file else KeyStore.for_signer(keys_dir(), target.owner).signer()
    except (SigningKeyError, OSError) as error:
        raise CliError(f"no signing key: {error}", ExitCode.NO_INPUT) from error

    async def send():
        async with Publisher(operator_connection(bootstrap), service=target.owner, signer=signer) as publisher:
            return await publisher.publish(event, correlation_id=correlation_id)

    envelope = asyncio.run(send())
    typer.echo(f"{envelope.id} correlation_id={envelope.correlation_id}")


def demo(
    orders: int = typer.Option(20, "--orders", min=1, help="How many orders to publish."),
    seed: int | None = typer.Option(None, "--seed", help="Same seed, same orders."),
    stock: bool = typer.Option(
        True, "--stock/--no-stock", help="First play the warehouse: one delivery of every product."
    ),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Publish N realistic orders to orders.placed.v2 and exit when the broker has them all."""
    from fleet.ops.demo import DEMO_SERVICE, WAREHOUSE, publish_demo_orders, publish_demo_stock
    from fleet.runtime.keys import KeyStore
    from fleet.runtime.settings import operator_connection

    # Both signers first: no keys fail the command before anything is published (SigningKeyError: exit 66).
    warehouse = KeyStore.for_signer(keys_dir(), WAREHOUSE).signer() if stock else None
    signer = KeyStore.for_signer(keys_dir(), DEMO_SERVICE).signer()
    if warehouse is not None:
        asyncio.run(publish_demo_stock(operator_connection(bootstrap), warehouse))
    envelopes = asyncio.run(publish_demo_orders(operator_connection(bootstrap), orders, signer, seed=seed))
    typer.echo(f"published {len(envelopes)} orders; the broker has them all")


def watch(
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Replay the topics' history first."),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Print every event on the registry's topics as one line, with its key and correlation id (Ctrl-C stops)."""
    from fleet.ops.watch import watch_events
    from fleet.runtime.settings import operator_connection

    async def main() -> None:
        await watch_events(operator_connection(bootstrap), typer.echo, asyncio.Event(), from_beginning=from_beginning)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
        asyncio.run(main())
