"""The `fleet` command line: the Typer app, one module per command group, and the one error boundary."""

from fleet.cli.app import app, main

__all__ = ["app", "main"]
