"""`fleet run SERVICE`: one replica of a service in the foreground."""

from __future__ import annotations

import typer

from fleet.catalog import HTTP_SERVICES, WORKERS

__all__ = ["run"]


def run(service: str = typer.Argument(..., help=f"One of: {', '.join([*WORKERS, *HTTP_SERVICES])}.")) -> None:
    """Run one replica of a service in the foreground (start more copies to scale it)."""
    from fleet.ops.runner import run_service

    run_service(service)  # an unknown service, no keys, no broker: the error boundary says which, in one line
