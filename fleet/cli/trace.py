"""`fleet trace`: a flow's timeline read back from the broker, by correlation or order id.

It reads every registry topic, with its retry and dead-letter topics."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import AsyncIterator, Callable

import typer

from contracts import REGISTRY, Registry
from contracts.connection import KafkaConnection, client_options
from fleet.cli.errors import CliError, ExitCode
from fleet.cli.options import BootstrapOption
from fleet.ops.reading import read_spans
from fleet.ops.timeline import (
    Timeline,
    TraceRecord,
    build_timeline,
    correlation_ids_of_order,
    format_header,
    format_lines,
    format_summary,
    matches,
    parse_since,
    timeline_json,
)
from fleet.runtime.settings import operator_connection

__all__ = ["flow_topics", "read_flow", "trace", "trace_flow"]


class NoTopics(RuntimeError):
    """None of the flow's topics exist on the broker."""


def flow_topics(registry: Registry = REGISTRY, *, keyed_by_order: bool = False) -> list[str]:
    """Every registry topic of the flows (the control topic is in none) with its retry topics and its dead-letter
    topic (only the order-keyed ones, if asked)."""
    return [
        name
        for topic in registry
        if not topic.broadcast and (not keyed_by_order or topic.key_field == "order_id")
        for name in (topic.name, *topic.retry_topics, topic.dead_letter_topic)
    ]


# ---- I/O: reading the topics with a plain consumer (assign + seek: no group, no commits) ---------------------------


async def read_flow(
    bootstrap: str | KafkaConnection, topics: list[str], since_ms: int, keep: Callable[[TraceRecord], bool]
) -> list[TraceRecord]:
    """The records of `topics` the broker appended from `since_ms` up to the ends of now, that `keep` keeps (values
    dropped)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from fleet.ops.topics import partitions_of

    counts = await partitions_of(bootstrap, topics)
    partitions = [TopicPartition(name, p) for name in topics for p in range(counts.get(name, 0))]
    if not partitions:
        raise NoTopics("none of the registry's topics exist on the broker yet: run `fleet topics apply`")
    consumer = AIOKafkaConsumer(
        **client_options(bootstrap), group_id=None, enable_auto_commit=False, client_id="fleet-trace"
    )
    try:
        await consumer.start()  # inside the try: a consumer that failed to start is closed too
        # First: it fetches their metadata, which the offset look-ups need (else they wait seconds).
        consumer.assign(partitions)
        starts = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        spans = {
            tp: (starts[tp].offset, ends[tp])
            for tp in partitions
            if starts.get(tp) is not None and starts[tp].offset < ends[tp]
        }
        return [r async for r in _read(consumer, spans) if keep(r)]
    finally:
        await consumer.stop()


async def _read(consumer, spans: dict) -> AsyncIterator[TraceRecord]:
    """Every record of each partition's span (the consumer has them assigned); never waits for records beyond the
    ends."""
    async for records in read_spans(consumer, spans):
        for record in records:
            yield TraceRecord.of(record)


async def trace_flow(
    bootstrap: str | KafkaConnection,
    *,
    since: datetime,
    correlation_id: str | None = None,
    order_id: str | None = None,
    registry: Registry = REGISTRY,
) -> Timeline:
    """The timeline of a flow, named by its correlation id or found from an order's records (key = order id)."""
    since_ms = int(since.timestamp() * 1000)
    ids: list[str] = [correlation_id] if correlation_id else []
    if order_id is not None:
        key = order_id.encode("utf-8")
        keyed = await read_flow(bootstrap, flow_topics(registry, keyed_by_order=True), since_ms, lambda r: r.key == key)
        ids = correlation_ids_of_order(keyed, order_id)
        if not ids:
            return Timeline((), (), order_id=order_id, since=since)
    records = await read_flow(bootstrap, flow_topics(registry), since_ms, lambda r: matches(r.headers, ids))
    return build_timeline(records, ids, order_id=order_id, since=since, registry=registry)


# ---- The command ----------------------------------------------------------------------------------------------


def trace(
    correlation_id: str | None = typer.Argument(
        None, help="The flow's correlation id (ce_correlationid), e.g. what `fleet publish` printed."
    ),
    order: str | None = typer.Option(
        None, "--order", help="Find the flow from this order's records (record key = order id) instead."
    ),
    since: str = typer.Option(
        "24h", "--since", help="Read from this long ago (24h, 90m, 2d) or from this time (2026-11-24T16:00:00Z)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout, for scripts."),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Print a flow's timeline from the broker: every event, retry and dead letter of one correlation id, in time order."""  # noqa: E501 (the command's help, line for line)
    if (correlation_id is None) == (order is None):
        raise CliError("give a correlation id or --order ORDER_ID (one of the two)", ExitCode.BAD_INPUT)
    now = datetime.now(UTC)
    try:
        start = parse_since(since, now)
    except ValueError as error:
        raise CliError(str(error), ExitCode.BAD_INPUT) from error
    server = operator_connection(bootstrap)
    try:  # a broker that does not answer is the error boundary's one line (exit 69)
        timeline = asyncio.run(trace_flow(server, since=start, correlation_id=correlation_id, order_id=order))
    except NoTopics as error:
        raise CliError(str(error), ExitCode.FAILED) from error
    except ValueError as error:  # raised by the client for an address that is not host:port
        raise CliError(f"bad bootstrap address {server.bootstrap_servers!r}: {error}", ExitCode.BAD_INPUT) from error
    if not timeline.entries:
        what = f"order {order}" if order is not None else f"correlation id {correlation_id}"
        raise CliError(
            f"no records of {what} on the flow's topics since {start.isoformat(timespec='seconds')} "
            "(try an earlier --since)",
            ExitCode.FAILED,
        )
    if as_json:
        typer.echo(json.dumps(timeline_json(timeline), indent=2, ensure_ascii=False))
        return
    typer.echo("\n".join([format_header(timeline), *format_lines(timeline), format_summary(timeline)]))
