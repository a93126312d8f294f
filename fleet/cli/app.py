"""The `fleet` command: the root app that gathers each module's commands, its --debug option, and `main`."""

from __future__ import annotations

import typer

from fleet.cli.acl import acl_app
from fleet.cli.control import pause, resume
from fleet.cli.dlq import dlq_app
from fleet.cli.docs import check, contracts_app, docs_app
from fleet.cli.errors import ErrorBoundary, run_as_process
from fleet.cli.events import demo, publish, watch
from fleet.cli.gateway import gateway_app
from fleet.cli.kafka import kafka_app
from fleet.cli.keys import keys_app
from fleet.cli.local_fleet import down, scale_command, status, up
from fleet.cli.rebuild import rebuild
from fleet.cli.replay import replay
from fleet.cli.run import run
from fleet.cli.topics import topics_app
from fleet.cli.trace import trace

__all__ = ["app", "main"]

app = typer.Typer(
    cls=ErrorBoundary,  # every failure below leaves through fleet.cli.errors: one line and a documented exit code
    help="eventfleet: signed, typed events between small async workers on Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root(
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar="FLEET_DEBUG",
        help="Show a failure's full traceback and the libraries' logs, not just its one line.",
    ),
) -> None:
    """eventfleet: signed, typed events between small async workers on Apache Kafka."""


# The order of `fleet --help`: the commands first, then the groups, each as it was added.
app.command("trace")(trace)
app.command()(run)
app.command()(demo)
app.command()(watch)
app.command()(up)
app.command("scale")(scale_command)
app.command()(down)
app.command()(status)
app.command()(pause)
app.command()(resume)
app.command()(rebuild)
app.command()(replay)
app.command()(check)
app.command()(publish)
app.add_typer(topics_app, name="topics")
app.add_typer(kafka_app, name="kafka")
app.add_typer(gateway_app, name="gateway")
app.add_typer(dlq_app, name="dlq")
app.add_typer(keys_app, name="keys")
app.add_typer(docs_app, name="docs")
app.add_typer(contracts_app, name="contracts")
app.add_typer(acl_app, name="acl")


def main() -> None:
    """The console script `fleet` and `python -m fleet`."""
    run_as_process(app)
