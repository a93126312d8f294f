"""Consume middleware: checks the envelope before anything trusts the record, binds the event's context, logs one line per event."""

from __future__ import annotations

import time
from typing import Any, Callable

import structlog
from faststream import BaseMiddleware

from contracts import REGISTRY, Envelope, EnvelopeError, InvalidPayload, Registry

from .rejects import Rejection, report_rejection

__all__ = ["EventContextMiddleware", "event_context_middleware"]

log = structlog.get_logger("fleet.events")


class EventContextMiddleware(BaseMiddleware):
    """Per message: envelope check, context bound once (contextvars), one `event_handled` or `event_failed` line."""

    registry: Registry = REGISTRY

    async def consume_scope(self, call_next: Callable[[Any], Any], msg: Any) -> Any:
        record = msg.raw_message
        try:
            envelope = _envelope_for(record, self.registry)
        except EnvelopeError as error:
            await report_rejection(Rejection.of(record, "invalid_envelope", str(error)))
            return None
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(**_event_context(record, envelope)), self.context.scope("envelope", envelope):
            try:
                result = await call_next(msg)
            except InvalidPayload as error:
                await report_rejection(Rejection.of(record, "invalid_payload", str(error)))
                return None
            except Exception as error:
                log.error("event_failed", error_class=type(error).__name__, reason=_one_line(error), duration_ms=_ms_since(started))
                raise
            log.info("event_handled", duration_ms=_ms_since(started))
            return result


def event_context_middleware(registry: Registry = REGISTRY) -> type[EventContextMiddleware]:
    """The middleware class bound to a registry (FastStream builds one middleware object per message)."""
    return type("EventContextMiddleware", (EventContextMiddleware,), {"registry": registry})


def _envelope_for(record: Any, registry: Registry) -> Envelope:
    envelope = Envelope.from_headers(record.headers or ())
    expected = registry.named(record.topic).type_name
    if envelope.type != expected:
        raise EnvelopeError(f"ce_type is {envelope.type!r}; topic {record.topic} carries only {expected!r}")
    return envelope


def _event_context(record: Any, envelope: Envelope) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "event_id": envelope.id,
        "event_type": envelope.type,
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
    }


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _one_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:300]
