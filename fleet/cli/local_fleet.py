"""`fleet up`, `fleet scale`, `fleet down`, `fleet status`: the local fleet of worker processes, and how it is doing."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, List

import typer

from fleet.catalog import WORKERS
from fleet.cli.errors import CliError, ExitCode
from fleet.cli.options import STATE_DIR, BootstrapOption, keys_dir

__all__ = ["down", "scale_command", "scale_pairs", "status", "up"]


def scale_pairs(pairs: List[str], *, known: tuple[str, ...] = WORKERS) -> dict[str, int]:
    """`payments=3 inventory=2` → {"payments": 3, "inventory": 2}; a bad pair fails the command."""
    wanted: dict[str, int] = {}
    for pair in pairs:
        service, sep, count = pair.partition("=")
        if not sep or not count.strip().isdigit():
            raise CliError(f"{pair!r}: expected SERVICE=N, e.g. payments=3", ExitCode.BAD_INPUT)
        if service not in known:
            raise CliError(f"unknown service {service!r}; the fleet has: {', '.join(known)}", ExitCode.BAD_INPUT)
        wanted[service] = int(count)
    return wanted


def _known_workers(chosen: list[str]) -> list[str]:
    unknown = sorted(set(chosen) - set(WORKERS))
    if unknown:
        raise CliError(
            f"unknown service(s) {', '.join(unknown)}; the fleet has: {', '.join(WORKERS)}", ExitCode.BAD_INPUT
        )
    return chosen


def up(
    services: List[str] | None = typer.Argument(None, help="Services to run (default: all)."),
    scale: List[str] = typer.Option(
        [], "--scale", help="SERVICE=N: run N replicas of SERVICE (repeatable; default 1 each)."
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Feed demo orders (a burst, then a trickle) and show events as they flow."
    ),
    orders: int = typer.Option(20, "--orders", min=0, help="Size of the demo burst."),
    every: float = typer.Option(2.0, "--every", min=0.0, help="Seconds between trickled demo orders (0: no trickle)."),
) -> None:
    """Start the broker if needed, apply topics, run the services as processes (replica n of a service serves /metrics
    on its port + 10*(n-1)); `fleet scale` changes replicas while it runs; Ctrl-C or `fleet down` stops everything."""
    from fleet.ops.up import run_fleet
    from fleet.runtime.observe.logs import configure_logging

    chosen = _known_workers(services or list(WORKERS))
    replicas = scale_pairs(scale)
    configure_logging("fleet-up")
    # A fleet already running here is FleetAlreadyRunning: exit 75, `fleet down` first.
    asyncio.run(
        run_fleet(
            [*chosen, *(s for s in replicas if s not in chosen)],
            state_dir=STATE_DIR,
            emit=typer.echo,
            demo_orders=orders if demo else 0,
            trickle_every_s=every if demo else 0.0,
            scale=replicas,
        )
    )


def scale_command(
    pairs: List[str] = typer.Argument(..., help="SERVICE=N ... e.g. payments=3 (0 stops every replica of it)."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for the running fleet to answer."),
) -> None:
    """Change the replica count of services in the running `fleet up`; scaling down stops the highest-numbered
    replicas with SIGTERM and waits for their graceful exit."""
    from fleet.ops.up import request_scale

    wanted = scale_pairs(pairs)
    try:  # no fleet running is NoFleetRunning: exit 1, and it says to start one
        outcome = request_scale(STATE_DIR, wanted, timeout_s=timeout)
    except TimeoutError as error:
        raise CliError(str(error), ExitCode.TRY_AGAIN) from error
    if outcome.get("error"):
        raise CliError(outcome["error"], ExitCode.FAILED)  # the running fleet could not scale: it says why
    started, stopped = outcome.get("started", []), outcome.get("stopped", [])
    typer.echo(
        ", ".join(f"{s}={n}" for s, n in wanted.items())
        + ": "
        + "; ".join(
            part
            for part in (
                f"started {', '.join(started)}" if started else "",
                f"stopped {', '.join(stopped)}" if stopped else "",
            )
            if part
        )
        or "nothing to change"
    )


def down(timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for the fleet to stop.")) -> None:
    """Stop the running `fleet up` (its replicas gracefully, and the broker if it started it)."""
    from fleet.ops.up import state_file_of, stop_fleet

    try:
        pid = stop_fleet(STATE_DIR, timeout_s=timeout)
    except TimeoutError as error:
        raise CliError(str(error), ExitCode.TRY_AGAIN) from error
    if pid is None:
        typer.echo(f"no local fleet is running (no live `fleet up` in {state_file_of(STATE_DIR)}): nothing to stop")
        return
    typer.echo(f"fleet up (pid {pid}) stopped")


def status(
    services: List[str] | None = typer.Argument(None, help="Services to show (default: all)."),
    watch_: bool = typer.Option(False, "--watch", help="Refresh live until Ctrl-C."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document, for scripts."),
    interval: float = typer.Option(
        1.0,
        "--interval",
        min=0.0,
        help="Seconds between the two looks events/s is measured from (--watch: between refreshes).",
    ),
    state_file: Path | None = typer.Option(
        None, "--state-file", help="The local fleet's state file (default .fleet/fleet.json)."
    ),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Per service: replicas, consumer group state and members, partitions per member, lag, events/s, dead letters,
    and whether an operator paused it (read from fleet.control.v1 with the keyring in FLEET_KEYS_DIR, if there is
    one)."""
    import json
    import os

    from fleet.ops.status import local_fleet, status_document, table_of, watch_status
    from fleet.ops.up import state_file_of
    from fleet.runtime.settings import operator_connection

    chosen = _known_workers(services or list(WORKERS))
    state_file = state_file or state_file_of(STATE_DIR)
    local = local_fleet(state_file)
    # A running local fleet knows its broker; --bootstrap and FLEET_KAFKA_BOOTSTRAP_SERVERS come first.
    address = operator_connection(
        bootstrap or os.environ.get("FLEET_KAFKA_BOOTSTRAP_SERVERS") or (local or {}).get("bootstrap")
    )
    keyring = _keyring_if_any()
    if watch_:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
            asyncio.run(
                watch_status(address, chosen, state_file=state_file, interval_s=max(interval, 0.5), keyring=keyring)
            )
        return
    # No broker is said by the error boundary, in one line, as for every command (a refused password too).
    document = asyncio.run(
        status_document(address, chosen, state_file=state_file, interval_s=interval, keyring=keyring)
    )
    if as_json:
        typer.echo(json.dumps(document, indent=1))
        return
    from rich.console import Console

    Console().print(table_of(document))


def _keyring_if_any() -> Any:
    """The keyring that verifies the operators' commands, or None on a machine without one (then `paused` is
    unknown in the status, not false)."""
    from fleet.runtime.keys import KeyStore, keyring_path

    if not keyring_path(keys_dir()).exists():
        return None
    return KeyStore(keyring_path(keys_dir())).keyring()
