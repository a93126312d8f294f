"""Traces: a tracer provider per worker process (sampling, exporter) and a consumer span per handled event, the child of
the producer span whose W3C trace context the record carries, so one trace follows a flow across the fleet."""

from __future__ import annotations

import contextlib
import random
from typing import Any, ContextManager, Iterator

from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts import Envelope
from contracts.tracing import TRACE_HEADERS, message_attributes, tracer

__all__ = ["TracingSettings", "configure_tracing", "consumer_span", "trace_id_of"]


class TracingSettings(BaseSettings):
    """Where a worker's spans go and how many flows it samples, from the environment: e.g.
    `FLEET_TRACING_EXPORTER=otlp-http`, `FLEET_TRACING_ENDPOINT=http://collector:4318/v1/traces` and
    `FLEET_TRACING_SAMPLE_RATIO=0.1`."""

    model_config = SettingsConfigDict(env_prefix="FLEET_TRACING_", extra="ignore")

    exporter: str = Field(
        "none",
        pattern="^(none|console|otlp-http|otlp-grpc)$",
        description="Where spans go: nowhere (the default; trace context still flows), stdout, or an OTLP collector.",
    )
    endpoint: str | None = Field(
        None, description="The OTLP endpoint; the exporter's own default (localhost) when unset."
    )
    sample_ratio: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Share of new flows traced at the edge; downstream follows the edge's decision (parent-based).",
    )


def configure_tracing(service: str, settings: TracingSettings | None = None) -> Any:
    """Installs the process's tracer provider; called once by `fleet run`, never at import. Returns the provider."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    settings = settings or TracingSettings()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "eventfleet"}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    exporter = _exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # exported off the event path, in batches
    # Spans that go nowhere are not built: a consumer only carries the flow's context on (and starts one, sampled at the
    # ratio, for a record that brings none). The SDK spent about 50 µs per event on spans it then dropped.
    _LOCAL.sample_ratio = None if exporter is not None else settings.sample_ratio
    trace.set_tracer_provider(provider)
    return provider


class _Local:
    """Whether this process exports spans: `sample_ratio` is None when it does (or was not configured)."""

    sample_ratio: float | None = None


_LOCAL = _Local()
_TRACE_ID_LOW = (1 << 64) - 1


def _traceparent(carrier: dict[str, str]) -> trace.SpanContext | None:
    """The W3C `traceparent` (version 00) as a remote span context, or None when there is none or it is not valid: the
    same answer as OpenTelemetry's propagator, without its regular expressions and context objects."""
    parts = carrier.get("traceparent", "").split("-")
    if len(parts) < 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    state = trace.TraceState.from_header([carrier["tracestate"]]) if "tracestate" in carrier else None
    return trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags & 0xFF), trace_state=state
    )


def _new_root(ratio: float) -> trace.SpanContext:
    """A new flow's context, sampled as the SDK's TraceIdRatioBased sampler would sample it (by its trace id)."""
    trace_id = random.getrandbits(128) or 1
    sampled = (trace_id & _TRACE_ID_LOW) < int(ratio * (1 << 64))
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
    return trace.SpanContext(trace_id, random.getrandbits(64) or 1, is_remote=False, trace_flags=flags)


def _exporter(settings: TracingSettings) -> Any:
    endpoint = settings.endpoint or None  # None: the exporter's own default (its environment variable, else localhost)
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if settings.exporter == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint)
    if settings.exporter == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=endpoint)
    return None


class _Carried:
    """A span that records nothing made current, as `trace.use_span` makes it, without its generator: on every event of
    a worker that exports no spans."""

    __slots__ = ("_token", "span")

    def __init__(self, span: trace.NonRecordingSpan) -> None:
        self.span = span

    def __enter__(self) -> trace.NonRecordingSpan:
        self._token = context_api.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, *exc_info: object) -> None:
        context_api.detach(self._token)


def consumer_span(record: Any, envelope: Envelope, group: str, service: str) -> ContextManager[Any]:
    """`process <topic>`: a CONSUMER span, child of the producer's `create` span and linked to it (messaging
    conventions). Events the handler emits become its children, so the flow stays one trace."""
    carrier = {k: v.decode("ascii", "replace") for k, v in (record.headers or ()) if k in TRACE_HEADERS}
    if _LOCAL.sample_ratio is not None:  # no exporter: the context flows on, no span is built
        return _Carried(trace.NonRecordingSpan(_traceparent(carrier) or _new_root(_LOCAL.sample_ratio)))
    return _exported_span(record, envelope, group, service, carrier)


@contextlib.contextmanager
def _exported_span(record: Any, envelope: Envelope, group: str, service: str, carrier: dict[str, str]) -> Iterator[Any]:
    """consumer_span in a worker that exports spans."""
    parent = propagate.extract(carrier)
    producer = trace.get_current_span(parent).get_span_context()
    if producer.is_valid and not producer.trace_flags.sampled:
        # Parent-based sampling drops this span whatever we do (9 flows in 10 at the default ratio): skip the SDK's work
        # (attributes, sampler, new ids), about 50 µs, and carry the producer's unsampled context on to what we emit.
        span = trace.NonRecordingSpan(producer)
        with trace.use_span(span, end_on_exit=False):
            yield span
        return
    links = [trace.Link(producer)] if producer.is_valid else []
    attributes = {
        **_record_attributes(record, envelope),
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.consumer.group.name": group,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
        "eventfleet.service": service,
    }
    with tracer().start_as_current_span(
        f"process {record.topic}", context=parent, kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes
    ) as span:
        yield span


def _record_attributes(record: Any, envelope: Envelope) -> dict:
    # The record as a contracts Record would describe it: the same attribute names on both ends.
    from contracts import Record

    return message_attributes(Record(record.topic, envelope.subject, record.value or b"", envelope))


def trace_id_of(span: Any) -> str | None:
    """The span's trace id as 32 hex digits, for log lines; None when no trace is known."""
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
