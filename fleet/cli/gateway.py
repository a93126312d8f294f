"""`fleet gateway ...`: add a client of the HTTP gateway (its token shown once, only its hash kept), serve it."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from fleet.cli.errors import CliError, ErrorBoundary, ExitCode, one_line

__all__ = ["gateway_app"]

gateway_app = typer.Typer(
    cls=ErrorBoundary,  # `gateway_app` on its own fails in one line too
    help="The HTTP gateway: clients and their tokens (GATEWAY_CLIENTS_FILE), and the server.",
    no_args_is_help=True,
)


@gateway_app.command("add-client")
def add_client(
    name: str = typer.Argument(..., help="The client's name, e.g. acme (letters, digits, . _ -)."),
    topic: List[str] = typer.Option(..., "--topic", help="A topic the client may publish to (repeat for several)."),
    replace: bool = typer.Option(
        False, "--replace", help="Give an existing client a new token (the old one stops working)."
    ),
    clients_file: Path | None = typer.Option(
        None, "--clients-file", help="Default: GATEWAY_CLIENTS_FILE or .fleet/gateway/clients.json."
    ),
) -> None:
    """Add a client with a new random token. The token is printed once; the file keeps only its SHA-256."""
    from fleet.catalog import add_gateway_client
    from fleet.runtime.keys import topics_signed_by

    # ValueError: a bad or taken name, a bad clients file (pydantic's ValidationError is one); LookupError: a topic
    try:
        token, path = add_gateway_client(name, topic, replace=replace, clients_file=clients_file)
    except (ValueError, LookupError) as error:  # a file it cannot read or write is the error boundary's (exit 1)
        raise CliError(one_line(error), ExitCode.BAD_INPUT) from error
    for refused in sorted(set(topic) - set(topics_signed_by("gateway"))):
        typer.secho(
            f"warning: the gateway's key may not sign {refused}; requests for it will get 403",
            fg=typer.colors.YELLOW,
            err=True,
        )
    typer.echo(
        f"client {name} may publish to {', '.join(topic)}; the gateway picks it up without a restart (file: {path})"
    )
    typer.echo("its token, shown only now (send it as `Authorization: Bearer <token>`):")
    typer.echo(token)


@gateway_app.command("serve")
def serve(
    host: str | None = typer.Option(
        None, "--host", help="Interface to listen on (default: GATEWAY_HOST or 127.0.0.1)."
    ),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="TCP port (default: GATEWAY_PORT or 8080)."),
) -> None:
    """Run the gateway in the foreground (Ctrl-C or SIGTERM stops it); OpenAPI docs at /docs."""
    from fleet.catalog import run_http_service
    from fleet.runtime.observe.logs import configure_logging

    overrides = {name: value for name, value in (("host", host), ("port", port)) if value is not None}
    configure_logging("gateway")
    run_http_service("gateway", **overrides)
