"""The `fleet` command: run a service, provision topics, feed demo orders, watch events, run the local broker and fleet."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import List, Optional

import typer

from services import SERVICES

from .settings import KafkaSettings

app = typer.Typer(help="eventfleet: signed, typed events between small async workers on Apache Kafka.", no_args_is_help=True, add_completion=False)
topics_app = typer.Typer(help="Topics from the registry.", no_args_is_help=True)
kafka_app = typer.Typer(help="The local Apache Kafka broker (KRaft, single node, 127.0.0.1:9092).", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(kafka_app, name="kafka")

STATE_DIR = Path(".fleet")
BootstrapOption = typer.Option(None, "--bootstrap", help="host:port of the brokers (default: FLEET_KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092).")


def _bootstrap(value: Optional[str]) -> str:
    return value or KafkaSettings().bootstrap_servers


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command()
def run(service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}.")) -> None:
    """Run one replica of a service in the foreground (start more copies to scale it)."""
    from .runner import UnknownService, run_service

    try:
        run_service(service)
    except UnknownService as error:
        _fail(str(error))


@topics_app.command("apply")
def topics_apply(
    bootstrap: Optional[str] = BootstrapOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change, change nothing."),
    replication_factor: int = typer.Option(1, "--replication-factor", min=1, help="Replicas of each new topic."),
) -> None:
    """Create or update every registry topic (idempotent); prints what it changed."""
    from .topics import apply_topics

    changes = asyncio.run(apply_topics(_bootstrap(bootstrap), replication_factor=replication_factor, dry_run=dry_run))
    for change in changes:
        typer.echo(("would " if dry_run and change.action != "unchanged" else "") + str(change))


@app.command()
def demo(
    orders: int = typer.Option(20, "--orders", min=1, help="How many orders to publish."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Same seed, same orders."),
    bootstrap: Optional[str] = BootstrapOption,
) -> None:
    """Publish N realistic orders to orders.placed.v1 and exit when the broker has them all."""
    from .demo import publish_demo_orders

    envelopes = asyncio.run(publish_demo_orders(_bootstrap(bootstrap), orders, seed=seed))
    typer.echo(f"published {len(envelopes)} orders; the broker has them all")


@app.command()
def watch(
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Replay the topics' history first."),
    bootstrap: Optional[str] = BootstrapOption,
) -> None:
    """Print every event on the registry's topics as one line, with its key and correlation id (Ctrl-C stops)."""
    from .watch import watch_events

    async def main() -> None:
        await watch_events(_bootstrap(bootstrap), typer.echo, asyncio.Event(), from_beginning=from_beginning)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


@app.command()
def up(
    services: Optional[List[str]] = typer.Argument(None, help="Services to run (default: all)."),
    demo: bool = typer.Option(False, "--demo", help="Feed demo orders (a burst, then a trickle) and show events as they flow."),
    orders: int = typer.Option(20, "--orders", min=0, help="Size of the demo burst."),
    every: float = typer.Option(2.0, "--every", min=0.0, help="Seconds between trickled demo orders (0: no trickle)."),
) -> None:
    """Start the broker if needed, apply topics, run the services as processes; Ctrl-C stops everything cleanly."""
    from .logging import configure_logging
    from .up import run_fleet

    chosen = services or list(SERVICES)
    unknown = sorted(set(chosen) - set(SERVICES))
    if unknown:
        _fail(f"unknown service(s) {', '.join(unknown)}; the fleet has: {', '.join(SERVICES)}")
    configure_logging("fleet-up")
    asyncio.run(
        run_fleet(
            chosen,
            state_dir=STATE_DIR,
            emit=typer.echo,
            demo_orders=orders if demo else 0,
            trickle_every_s=every if demo else 0.0,
        )
    )


@kafka_app.command("start")
def kafka_start(timeout: float = typer.Option(90.0, help="Seconds to wait for the broker to answer.")) -> None:
    """Start the local broker (assembling it from Maven Central the first time); returns when it answers."""
    from . import kafka_local

    try:
        typer.echo(kafka_local.start(timeout=timeout))
    except Exception as error:  # the launcher's errors carry the broker log's tail: show them, fail the command
        _fail(f"the local Kafka broker did not start: {error}")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker by its PID."""
    from . import kafka_local

    typer.echo(kafka_local.stop())


@kafka_app.command("status")
def kafka_status() -> None:
    """Is the local broker running and answering?"""
    from . import kafka_local

    typer.echo(str(kafka_local.status()))


@kafka_app.command("logs")
def kafka_logs(lines: int = typer.Option(200, "--lines", "-n", help="How many lines from the end.")) -> None:
    """Show the end of the local broker's log."""
    from . import kafka_local

    path = kafka_local.log_path()
    if not path.exists():
        _fail(f"no broker log yet at {path}")
    typer.echo("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


def main() -> None:
    app()
