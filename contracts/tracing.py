"""W3C trace context on records, when OpenTelemetry is installed: a `create <topic>` span per record, its traceparent in
the record's unsigned transport headers, so one trace follows an order across every service."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Protocol, TypeVar

try:  # optional: the contracts package works without OpenTelemetry, and then adds no trace headers
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - exercised by the standalone package test
    propagate = trace = None  # type: ignore[assignment]  # the modules' stand-in when they are not installed

__all__ = ["TRACE_HEADERS", "message_attributes", "trace_headers", "tracer", "with_trace_context"]


class _Envelope(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def correlation_id(self) -> str: ...
    @property
    def type(self) -> str: ...


class TracedRecord(Protocol):
    """What tracing reads of a record (contracts.envelope.Record has it):
    this module needs no import of the envelope's."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # a dataclass, so `with_trace_context` can `replace` it

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> bytes: ...
    @property
    def transport(self) -> tuple[tuple[str, bytes], ...]: ...
    @property
    def envelope(self) -> _Envelope: ...


R = TypeVar("R", bound=TracedRecord)

TRACE_HEADERS = ("traceparent", "tracestate")
_CACHED: list = [None, None, None]  # the provider and the get_tracer it was made with, and the tracer


def tracer():
    """The `eventfleet` tracer, made once per provider: `get_tracer` builds a new Tracer (and emits a deprecation
    warning) on every call, about 10 µs on the per-event path. Keyed by the provider and by `get_tracer` itself, so a
    provider set later, or a test's stand-in for either, is seen at once."""
    provider, getter = trace.get_tracer_provider(), trace.get_tracer
    if _CACHED[0] is not provider or _CACHED[1] is not getter:
        _CACHED[:] = [provider, getter, getter("eventfleet")]  # holding both: an id could be reused, an object cannot
    return _CACHED[2]


def message_attributes(record: TracedRecord) -> dict[str, str | int]:
    """OpenTelemetry messaging attributes of a record: no payload, no key material."""
    return {
        "messaging.system": "kafka",
        "messaging.destination.name": record.topic,
        "messaging.kafka.message.key": record.key,
        "messaging.message.id": record.envelope.id,
        "messaging.message.conversation_id": record.envelope.correlation_id,
        "messaging.message.body.size": len(record.value),
        "cloudevents.event_type": record.envelope.type,
    }


def with_trace_context(record: R) -> R:
    """The record with the headers of a new `create` span, a child of the current span (the handler's consumer span, or
    nothing at the edge, where a flow's trace begins). Without a configured tracer provider this adds nothing."""
    if trace is None:
        return record
    kept = tuple((k, v) for k, v in record.transport if k not in TRACE_HEADERS)
    return replace(record, transport=kept + trace_headers(record))


def trace_headers(record: TracedRecord) -> tuple[tuple[str, bytes], ...]:
    """The W3C trace context headers `with_trace_context` gives `record` (a new `create` span's, or the current flow's
    as it is), without copying the record: for a caller that makes the record itself (contracts.envelope.encode)."""
    if trace is None:
        return ()
    span = trace.get_current_span()
    current = span.get_span_context()
    if current.is_valid and not (current.trace_flags.sampled and span.is_recording()):
        # Inside a flow that is not sampled, parent-based sampling would drop the `create` span anyway; and inside a
        # span that is not recorded (a worker that exports no spans), a child span would go nowhere either: pass the
        # flow's context on as it is, without the SDK's work for a span nobody records.
        if _w3c_only():
            return _w3c_headers(current)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    else:
        attributes = message_attributes(record) | {
            "messaging.operation.type": "create",
            "messaging.operation.name": "create",
        }
        carrier = {}
        with tracer().start_as_current_span(
            f"create {record.topic}", kind=trace.SpanKind.PRODUCER, attributes=attributes
        ):
            propagate.inject(carrier)
    return tuple((k, v.encode("ascii")) for k, v in carrier.items() if k in TRACE_HEADERS)


_TEXTMAP: list = [None, False]  # the global propagator last looked at, and whether it writes W3C trace context only


def _w3c_only() -> bool:
    """Whether the process's propagator is OpenTelemetry's default (W3C trace context, and baggage, which no record
    carries): then the headers are written here, as its `inject` writes them, without its context look-ups and carrier
    (about 5 µs per event). Any other propagator is asked itself."""
    textmap = propagate.get_global_textmap()
    if _TEXTMAP[0] is not textmap:
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parts = getattr(textmap, "_propagators", [textmap])
        known = all(type(part) in (TraceContextTextMapPropagator, W3CBaggagePropagator) for part in parts)
        w3c = known and any(type(part) is TraceContextTextMapPropagator for part in parts)
        _TEXTMAP[:] = [textmap, w3c]  # holding the object: an id could be reused, an object cannot
    return bool(_TEXTMAP[1])


def _w3c_headers(context: Any) -> tuple[tuple[str, bytes], ...]:
    """`traceparent` (and `tracestate`, when the flow has one) of a valid span context, as TraceContextTextMapPropagator
    writes them."""
    parent = (f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}").encode("ascii")
    if context.trace_state:
        return (("traceparent", parent), ("tracestate", context.trace_state.to_header().encode("ascii")))
    return (("traceparent", parent),)
