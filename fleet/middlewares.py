"""Consume middleware: verifies each record before anything trusts it, binds its context once, writes one line per event."""

from __future__ import annotations

import time
from typing import Any, Callable

import structlog
from faststream import BaseMiddleware

from contracts import REGISTRY, Envelope, Registry, Rejected, verify_record

from .keys import KeyStore
from .rejects import DeadLetters, Rejection

__all__ = ["EventContextMiddleware", "event_context_middleware"]

log = structlog.get_logger("fleet.events")


class EventContextMiddleware(BaseMiddleware):
    """Per record: verify (raw bytes, before FastStream parses anything), then context bound once (contextvars),
    then one `event_handled` or `event_failed` line. A refused record goes to its dead-letter topic, then is committed."""

    registry: Registry = REGISTRY
    keys: KeyStore
    dead_letters: DeadLetters
    window_s: float = 300.0

    async def on_receive(self) -> None:
        record = self.msg
        self.envelope: Envelope | None = None
        self.rejection: Rejection | None = None
        try:
            self.envelope = verify_record(
                record.topic, record.key, record.value, record.headers or (), record.timestamp,
                self.keys.keyring(), registry=self.registry, window_s=self.window_s,
            )
        except Rejected as refused:
            await self._reject(Rejection.of(record, refused.reason, refused.detail))

    async def consume_scope(self, call_next: Callable[[Any], Any], msg: Any) -> Any:
        if self.envelope is None:
            return None  # refused in on_receive: dead-lettered there, committed by the acknowledgement that follows
        record, envelope = self.msg, self.envelope
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(**_event_context(record, envelope)), self.context.scope("envelope", envelope):
            try:
                result = await call_next(msg)
            except Rejected as refused:  # the value failed its model: decoded inside call_next
                await self._reject(Rejection.of(record, refused.reason, refused.detail))
                return None
            except Exception as error:
                log.error("event_failed", error_class=type(error).__name__, reason=_one_line(error), duration_ms=_ms_since(started))
                raise
            log.info("event_handled", duration_ms=_ms_since(started))
            return result

    async def after_processed(self, exc_type=None, exc_val=None, exc_tb=None) -> bool | None:
        # FastStream's parser raises on headers it cannot decode; the record was already dead-lettered in on_receive.
        return bool(exc_val is not None and self.rejection is not None)

    async def _reject(self, rejection: Rejection) -> None:
        self.rejection = rejection
        subscriber = self.context.get("handler_")
        await self.dead_letters.send(rejection, group=getattr(subscriber, "group_id", "") or "")


def event_context_middleware(keys: KeyStore, dead_letters: DeadLetters, *, registry: Registry = REGISTRY,
                             window_s: float = 300.0) -> type[EventContextMiddleware]:
    """The middleware class bound to one worker's keys and dead-letter publisher (FastStream makes one object per record)."""
    attributes = {"registry": registry, "keys": keys, "dead_letters": dead_letters, "window_s": window_s}
    return type("EventContextMiddleware", (EventContextMiddleware,), attributes)


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
