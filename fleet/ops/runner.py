"""`fleet run SERVICE`: builds one service's app through its `create_app()` and runs it until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys

from fleet import catalog
from fleet.runtime.access import EXIT_ACCESS_DENIED, KafkaAccessDenied
from fleet.runtime.observe.logs import configure_logging
from fleet.runtime.observe.tracing import configure_tracing

__all__ = ["EXIT_PRODUCER_LOST", "freeze_what_started", "run_service"]


EXIT_PRODUCER_LOST = 75  # EX_TEMPFAIL: a producer stopped for good; the worker stopped cleanly, to be restarted
# How often FastStream's app.run looks whether it was told to stop (its default, 0.1 s, woke an idle worker ten times a
# second: a quarter of its CPU at rest, docs/performance.md). A stop starts at most this much later.
EXIT_CHECK_S = 0.5


def run_service(name: str) -> None:
    """Runs one service in this process, until SIGTERM or Ctrl-C.

    Replicas need no code change: every copy of a worker joins the service's consumer group, sharing its partitions."""
    entry = catalog.entry_of(name)  # UnknownService for a name the fleet does not have
    configure_logging(name)
    configure_tracing(name)
    if entry.kind == "http":
        # uvicorn, on the host and port of its settings (e.g. GATEWAY_HOST, GATEWAY_PORT)
        catalog.run_http_service(name)
        return
    app = catalog.create_app(name)
    app.after_startup(freeze_what_started)
    denials = app.broker.state.denials
    # A refusal while running: stop cleanly (commit what is done), then exit as below.
    app.broker.state.stop_worker = app.exit
    try:
        asyncio.run(_run_closing_on_failed_start(app))
    except KafkaAccessDenied:  # refused at start: already logged as kafka_access_denied
        denials.first = denials.first or sys.exc_info()[1]
    if denials.first is not None:
        # Not a crash to restart: every restart would be refused alike until a password or an ACL changes.
        sys.exit(EXIT_ACCESS_DENIED)
    if app.broker.state.lost_producer is not None:
        sys.exit(EXIT_PRODUCER_LOST)  # a restart gives the worker new producers (`fleet up` and Kubernetes restart it)


async def freeze_what_started() -> None:
    """Once the worker runs, what it built to start (modules, clients, models: about 80,000 objects) stays for good:
    gc.freeze() takes it out of the garbage collector's full passes. Each full pass scanned all of it and stopped the
    event loop for about 30 ms; one payments replica draining 10,000 orders spent 146 ms in 45 collections with them
    and 57 ms without (docs/performance.md)."""
    gc.freeze()


async def _run_closing_on_failed_start(app) -> None:
    """FastStream leaves what the startup hooks opened when the broker then fails to start (no broker): the store's
    thread would keep the process alive after the error. Closing it lets the worker exit, to be restarted."""
    try:
        await app.run(sleep_time=EXIT_CHECK_S)
    except Exception:
        if not getattr(app, "running", False):  # the start failed: the shutdown hooks never ran
            with contextlib.suppress(Exception):  # the start's error is the one to report, not a close's
                await app.stop()
        raise
