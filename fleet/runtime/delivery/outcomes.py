"""The per-record steps: verify a record before anything trusts it, run its handler, and make its outcome durable.

The handler runs in the record's context (bound once: every log line carries it, and its span), within its time limit,
and one line says how it ended. A failure goes to the next retry tier or the dead-letter topic before the record's
offset may be committed (fleet.runtime.delivery.batches runs these steps for each record of a batch)."""

from __future__ import annotations

import asyncio
import contextvars
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Awaitable, Callable

import structlog
from opentelemetry import trace

from contracts import REGISTRY, Envelope, Registry, Rejected, redacted, verify_record
from contracts.connection import KafkaConnection
from fleet.runtime.access import Denials, authenticate_or_report, denial_of
from fleet.runtime.delivery.dead_letters import FailureRouter, Rejection
from fleet.runtime.delivery.retries import (
    DeadLetterStep,
    RetryPolicy,
    attempt_of,
    carried_failures,
    due_ms,
    failure_headers,
    next_step,
    now_ms,
    one_line,
    retry_record,
)
from fleet.runtime.errors import PermanentError, stops_the_producer
from fleet.runtime.faults import Faults
from fleet.runtime.keys import KeyStore
from fleet.runtime.observe.health import Progress
from fleet.runtime.observe.logs import event_context
from fleet.runtime.observe.metrics import WorkerMetrics
from fleet.runtime.observe.tracing import consumer_span, trace_id_of

__all__ = ["RecordOutcomes", "Subscription", "WorkerState", "current_envelope"]

log = structlog.get_logger("fleet.events")
# The verified envelope of the record in hand: the handler gets it as its `envelope` argument (fleet.runtime.broker).
_ENVELOPE: contextvars.ContextVar[Envelope] = contextvars.ContextVar("fleet_envelope")


def current_envelope() -> Envelope:
    return _ENVELOPE.get()


ROUTING_BACKOFF_S = 1.0  # when even the retry or dead-letter topic cannot be reached: wait, then redeliver


class WorkerState:
    """What every record's middleware of one worker shares: whether it is stopping, injected faults,
    metrics, progress."""

    def __init__(self, service: str = "worker", faults: Faults | None = None) -> None:
        self.stopping = False
        self.faults = faults or Faults()
        self.metrics = WorkerMetrics(service)
        self.progress = Progress()
        # How to stop this worker cleanly (its runner sets FastStream's `app.exit`): when Kafka refuses it, or when a
        # producer stopped for good. Either way a retry loop would fail alike, so the worker stops and its runner exits.
        self.stop_worker: Callable[[], None] | None = None
        self.denials = Denials(on_first=self.request_stop)
        self.connection: KafkaConnection | None = None  # the worker's, set by create_broker: whom a refusal names
        self.lost_producer: BaseException | None = (
            None  # then the worker stops, and its runner exits 75 to be restarted
        )
        self._logged_in = False

    async def log_in(self) -> None:
        """Once per worker, before its first client starts (the outbox relay's or the broker's, whichever comes first):
        a wrong password is named as such, not as aiokafka's "Unable to bootstrap"."""
        if not self._logged_in and self.connection is not None:
            await authenticate_or_report(self.connection, self.denials)
            self._logged_in = True
            if self.connection.principal:  # who the broker's ACLs see: what an operator checks first when one refuses
                log.info(
                    "kafka_logged_in", principal=self.connection.principal, bootstrap=self.connection.bootstrap_servers
                )

    def report_if_refused(self, error: BaseException, doing: str) -> bool:
        """True when Kafka refused this worker (a password, an ACL): reported once, and the worker stops."""
        denial = denial_of(error, self.connection, doing) if self.connection is not None else None
        if denial is not None:
            self.denials.report(denial)
        return denial is not None

    def send_failed(self, error: BaseException, doing: str) -> bool:
        """An emitted record the broker did not take. A refusal is reported as such (`refused`; True). An error that
        stops the producer for good stops the worker too, to be restarted with new producers: the record is redelivered
        either way, but to this producer every redelivery would fail the same way."""
        if self.report_if_refused(error, doing):
            return True
        if stops_the_producer(error) and self.lost_producer is None:
            self.lost_producer = error
            log.error(
                "kafka_producer_stopped",
                doing=doing,
                error_class=type(error).__name__,
                reason=str(error)[:300],
                hint="the worker stops and exits 75 to be restarted with new producers; its record is handled again",
            )
            self.request_stop()
        return False

    def request_stop(self) -> None:
        """Stops the worker cleanly (what is done is committed first), if its runner said how."""
        if self.stop_worker is not None:
            self.stop_worker()


@dataclass(eq=False)
class Subscription:
    """What the delivery engine knows of one FastStream subscriber: its retry policy, and the subscriber itself (set
    once FastStream made it), whose consumer commits and seeks."""

    policy: RetryPolicy
    subscriber: Any = None
    # While a batch is handled: per (topic, partition), the offset of its first record not yet handled. The consumer's
    # position is past the whole batch already, so lag counts from here (what is fetched is not yet handled).
    unhandled: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def main(self) -> bool:
        """A subscriber of the service's own topics, not of a retry tier."""
        return not self.policy.tier

    @property
    def consumer(self) -> Any:
        """Its aiokafka consumer while it runs (None before start, and on FastStream's in-memory test broker)."""
        return getattr(self.subscriber, "consumer", None)


class RecordOutcomes:
    """One worker's per-record steps, which fleet.runtime.delivery.batches runs for each record of a batch: verify, run
    the handler in the record's context within its time limit, and route a failure to retry or dead letter. Every method
    returns once the outcome is durable, or raises when it could not be made so (then: redeliver)."""

    def __init__(
        self,
        keys: KeyStore,
        failures: FailureRouter,
        state: WorkerState,
        *,
        registry: Registry = REGISTRY,
        window_s: float = 300.0,
        log_payloads: bool = False,
    ) -> None:
        self.keys, self.failures, self.state = keys, failures, state
        self.registry, self.window_s, self.log_payloads = registry, window_s, log_payloads

    def is_foreign(self, record: Any, policy: RetryPolicy) -> bool:
        """Another consumer group's retry on a shared retry topic: not ours to judge or handle."""
        return bool(policy.tier) and _header(record, "retry-group") != policy.group.encode()

    def verify(self, record: Any) -> Envelope:
        """The record's envelope, or `Rejected`; pure and thread-safe, so a batch may verify in a thread pool."""
        return verify_record(
            record.topic,
            record.key,
            record.value,
            record.headers or (),
            record.timestamp,
            self.keys.keyring(),
            registry=self.registry,
            window_s=self.window_s,
        )

    async def run(
        self,
        record: Any,
        envelope: Envelope,
        policy: RetryPolicy,
        in_flight_key: object,
        call: Callable[[], Awaitable[Any]],
        payload: Callable[[], Awaitable[Any]] | None = None,
    ) -> Any:
        """The handler (`call`) in the record's span and log context, within its time limit,
        then one line on how it ended."""
        with (
            consumer_span(record, envelope, policy.group, self.failures.service) as span,
            event_context(**_event_context(record, envelope), trace_id=trace_id_of(span)),
        ):
            if policy.tier:
                await self.wait_until_due(due_ms(record.headers or ()))
            started = time.perf_counter()
            progress = self.state.progress
            progress.started(in_flight_key)
            token = _ENVELOPE.set(envelope)
            try:
                # asyncio.timeout, not wait_for: no task per event (Python 3.11's wait_for wraps the call in one).
                async with asyncio.timeout(policy.handler_timeout_s):
                    result = await self._handle(call)
            except Rejected as refused:  # the value failed its model: decoded inside the call
                await self.dead_letter(Rejection.of(record, refused.reason, refused.detail), policy)
                return None
            except Exception as error:  # includes TransientError, PermanentError and the time limit
                if self.state.report_if_refused(error, "publishing what its handler emitted"):
                    raise  # not the event's fault, and every event would fail alike: the worker stops, the record waits
                await self.after_failure(record, envelope, error, policy, started)
                return None
            finally:
                _ENVELOPE.reset(token)
                progress.finished(in_flight_key)
            seconds = time.perf_counter() - started
            self.state.metrics.record_outcome(record.topic, "handled", seconds)
            if (
                self.log_payloads and payload is not None
            ):  # opt-in, for debugging: personal fields are redacted even then
                log.info("event_handled", duration_ms=round(seconds * 1000, 3), payload=redacted(await payload()))
            else:
                log.info("event_handled", duration_ms=round(seconds * 1000, 3))
            return result

    async def _handle(self, call: Callable[[], Awaitable[Any]]) -> Any:
        faults = self.state.faults
        if faults.active and (delay := faults.delay_for_next()):  # chaos runs only
            log.warning("fault_injected_slow_handler", delay_s=delay)
            await asyncio.sleep(delay)
        elif faults.crashes:  # crash tests only: count what was handled before the crash point may strike
            faults.handled += 1
        return await call()

    async def wait_until_due(self, due: int) -> None:
        """Sleeps in short steps, so a stopping worker abandons the wait at once (the record is then redelivered)."""
        while (left := due - now_ms()) > 0:
            if self.state.stopping:
                raise asyncio.CancelledError("worker stopping; the retry is redelivered")
            await asyncio.sleep(min(left / 1000, 0.2))

    async def after_failure(
        self, record: Any, envelope: Envelope, error: Exception, policy: RetryPolicy, started: float
    ) -> None:
        attempts = attempt_of(record.headers or ())
        now = datetime.now(UTC)
        failure = failure_headers(
            record.headers or (),
            attempt=attempts + 1,
            group=policy.group,
            error=error,
            origin=(record.topic, record.partition, record.offset),
            now=now,
        )
        step = next_step(policy, attempts, isinstance(error, PermanentError), now_ms())
        trace.get_current_span().set_status(
            trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {one_line(error)}")
        )
        log.warning(
            "event_failed",
            error_class=type(error).__name__,
            reason=one_line(error),
            attempt=attempts + 1,
            next=getattr(step, "reason", "retry"),
            duration_ms=_ms_since(started),
        )
        try:
            if isinstance(step, DeadLetterStep):
                await self.dead_letter(
                    Rejection.of(record, step.reason, one_line(error), failure), policy, time.perf_counter() - started
                )
            else:
                topic = self.registry.resolve(record.topic)
                retry, extra = retry_record(
                    topic,
                    step.tier,
                    record.key.decode(),
                    record.value,
                    envelope,
                    record.headers or (),
                    failure,
                    step.due_ms,
                    self.keys.signer(),
                    now,
                )
                await self.failures.retry(retry.topic, record.key, record.value, retry.raw_headers() + extra)
                self.state.metrics.record_outcome(record.topic, "retried", time.perf_counter() - started)
                log.info("event_retry_scheduled", retry_topic=retry.topic, due_in_ms=step.due_ms - now_ms())
        except Exception as routing_error:
            self.state.metrics.record_outcome(record.topic, "failed")
            if self.state.report_if_refused(routing_error, "writing a retry or dead letter"):
                raise
            log.error(
                "event_outcome_not_durable", error_class=type(routing_error).__name__, reason=one_line(routing_error)
            )
            await asyncio.sleep(ROUTING_BACKOFF_S)
            raise

    async def dead_letter(self, rejection: Rejection, policy: RetryPolicy, seconds: float | None = None) -> None:
        if policy.tier and not rejection.failures:
            # Refused on a retry tier (its signature, its value): the dead letter names where the record first came
            # from and how it failed before, from the retry headers the fleet wrote, as one out of retries does.
            rejection = replace(rejection, failures=tuple(carried_failures(rejection.headers, policy.tier).items()))
        try:
            await self.failures.dead_letter(rejection, group=policy.group)
        except Exception as error:
            self.state.report_if_refused(error, "writing a dead letter")
            raise
        self.state.metrics.record_outcome(rejection.topic, "dead_lettered", seconds)


def _header(record: Any, name: str) -> bytes:
    return dict(record.headers or ()).get(name, b"")


def _event_context(record: Any, envelope: Envelope) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "event_id": envelope.id,
        "event_type": envelope.type,
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
        # A record on its topic is on its first attempt; only a retry topic's carries the count (no header scan).
        "attempt": attempt_of(record.headers or ()) + 1 if ".retry." in record.topic else 1,
    }


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
