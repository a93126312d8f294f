"""Per-stage in-process profile: the median per-event cost (µs) of each stage of the fleet's real per-event path."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ContextManager
from unittest import mock

import structlog
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace

from contracts import (
    ED25519,
    HMAC_SHA256,
    REGISTRY,
    Envelope,
    Keyring,
    OrderItem,
    OrderPlaced,
    PrivateKey,
    Record,
    decode_keyed_value,
    encode,
    source_of,
    verify_record,
)
from fleet.runtime.delivery import outcomes as middlewares
from fleet.runtime.observe import logs as worker_logs
from fleet.runtime.observe.logs import configure_logging, event_context
from fleet.runtime.delivery.retries import RetryPolicy
from fleet.runtime.settings import LogSettings
from fleet.runtime.observe.tracing import TracingSettings, configure_tracing, consumer_span, trace_id_of
from services.payments import core

from .stats import format_table

__all__ = ["Inputs", "Stage", "StageFailed", "build_inputs", "measure_stages", "signature_only_stage", "stage_table",
           "time_stage", "verify_stage"]

SERVICE = "payments"  # the stages are one payments worker handling one OrderPlaced
GROUP = "payments"
TOPIC = "orders.placed.v1"
DEFAULT_TRACING = TracingSettings(exporter="none", sample_ratio=0.1)  # a worker's defaults (FLEET_TRACING_* unset)
TABLE = [("stage", "stage", 0), ("median_us", "median µs", 1), ("min_us", "min µs", 1), ("max_us", "max µs", 1),
         ("cpu_median_us", "CPU µs", 1), ("what", "what", 0)]


class StageFailed(RuntimeError):
    """A stage's call did not do its work (a record that does not verify, a line not written): its timing would be a fake."""


@dataclass(frozen=True)
class Stage:
    """One stage: `call` does one event's work; `check` raises StageFailed unless `call`'s result shows it was done."""

    name: str
    what: str
    call: Callable[[], Any]
    check: Callable[[Any], None]
    scope: Callable[[], ContextManager] = contextlib.nullcontext  # entered around the warm-up and the samples


@dataclass(frozen=True)
class Inputs:
    """One OrderPlaced as payments receives it, signed each way, and what payments makes of it."""

    order: OrderPlaced
    policy: core.CreditPolicy
    now: datetime
    keyring: Keyring
    records: dict[str, ConsumerRecord]  # "ed25519" / "hmac-sha256": the record as aiokafka delivers it, not sampled
    sampled: ConsumerRecord  # the Ed25519 record, but its producer's trace was sampled
    envelope: Envelope  # the verified envelope of records["ed25519"]
    signers: dict[str, PrivateKey]  # payments' own keys, by algorithm
    outcome: Any  # core.decide's answer: what the handler publishes


# --- the set-ups a worker makes, scoped to a block so the process's own come back ---------------------------------


@contextlib.contextmanager
def worker_tracer(settings: TracingSettings = DEFAULT_TRACING, export_to: Any = None):
    """configure_tracing's provider, current for this block only. It installs the provider as the process's global, which
    OpenTelemetry allows once per process, so that setter is held off and `trace.get_tracer` routed to it meanwhile
    (as tests/unit/test_logging_and_tracing.py does). `export_to`: an exporter behind a BatchSpanProcessor, as otlp-* get."""
    from fleet.runtime.observe import tracing

    saved_ratio = tracing._LOCAL.sample_ratio  # configure_tracing says there whether spans are built at all
    with mock.patch.object(trace, "set_tracer_provider", lambda provider: None):
        provider = configure_tracing(SERVICE, settings)
    if export_to is not None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(export_to))
        tracing._LOCAL.sample_ratio = None  # spans go somewhere: they are built, as with FLEET_TRACING_EXPORTER=otlp-*
    try:
        with mock.patch.object(trace, "get_tracer", provider.get_tracer):
            yield provider
    finally:
        provider.shutdown()
        tracing._LOCAL.sample_ratio = saved_ratio


_SINKS: list = []  # the stdout of the worker_logging block in force


def _last_line(sink: Any) -> str:
    sink.flush()
    size = sink.seek(0, os.SEEK_END)
    sink.seek(max(0, size - 8192))
    lines = sink.read().splitlines()
    sink.seek(0, os.SEEK_END)
    return lines[-1] if lines else ""


@contextlib.contextmanager
def worker_logging(service: str = SERVICE):
    """configure_logging as a worker runs it (JSON lines, INFO) with its stdout on a temporary file: every line is
    rendered and written, as a worker's to its log file. The process's logging and structlog set-up (a test run's, a
    caller's) are put back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_aiokafka = logging.getLogger("aiokafka").level
    saved_config, saved_context = structlog.get_config(), structlog.contextvars.get_contextvars()
    saved_process = dict(worker_logs._PROCESS)  # the service and replica every line of the process carries
    with tempfile.TemporaryFile("w+") as sink:
        try:
            with mock.patch.object(sys, "stdout", sink):  # configure_logging's handler writes to the stdout of its call
                configure_logging(service, LogSettings(level="INFO", format="json", payloads=False))
            _SINKS.append(sink)
            yield sink
        finally:
            if _SINKS and _SINKS[-1] is sink:
                _SINKS.pop()
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)
            logging.getLogger("aiokafka").setLevel(saved_aiokafka)
            structlog.configure(**saved_config)
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(**saved_context)
            worker_logs._PROCESS.clear()
            worker_logs._PROCESS.update(saved_process)


# --- the inputs ------------------------------------------------------------------------------------------------------


def build_inputs() -> Inputs:
    """Keys of both algorithms, the order signed with each, verified once, and payments' decision on it."""
    now = datetime.now(timezone.utc)
    order = OrderPlaced(order_id="ord-bench-000001", customer_id="cus-1042", currency="EUR", total_cents=2 * 1250 + 3990,
                        items=(OrderItem(sku="SKU-TEA-001", quantity=2, unit_price_cents=1250),
                               OrderItem(sku="SKU-MUG-004", quantity=1, unit_price_cents=3990)),
                        placed_at=now)
    storefront = {alg: PrivateKey.generate(f"bench-storefront-{alg}", alg) for alg in (ED25519, HMAC_SHA256)}
    payments = {alg: PrivateKey.generate(f"bench-payments-{alg}", alg) for alg in (ED25519, HMAC_SHA256)}
    keyring = Keyring()
    for key in storefront.values():
        keyring = keyring.with_key(key.public([TOPIC], owner="storefront"))
    for key in payments.values():
        keyring = keyring.with_key(key.public(["payments.authorized.v1", "payments.declined.v1"], owner="payments"))
    records = {alg: _delivered(order, key, sampled=False) for alg, key in storefront.items()}
    envelope = _verify(records[ED25519], keyring)
    policy = core.CreditPolicy()
    return Inputs(order, policy, now, keyring, records, _delivered(order, storefront[ED25519], sampled=True), envelope,
                  payments, core.decide(order, policy, now))


def _delivered(event: Any, signer: PrivateKey, *, sampled: bool) -> ConsumerRecord:
    """The storefront's signed record as aiokafka hands it to a consumer; its traceparent says `sampled` or not."""
    with worker_tracer(TracingSettings(exporter="none", sample_ratio=1.0 if sampled else 0.0)):
        record = encode(event, source=source_of("storefront"), signer=signer)
    key = record.key.encode()
    return ConsumerRecord(topic=record.topic, partition=3, offset=41, timestamp=time.time_ns() // 1_000_000,
                          timestamp_type=0, key=key, value=record.value, checksum=None, serialized_key_size=len(key),
                          serialized_value_size=len(record.value), headers=record.raw_headers())


def _verify(raw: ConsumerRecord, keyring: Keyring) -> Envelope:
    return verify_record(raw.topic, raw.key, raw.value, raw.headers, raw.timestamp, keyring)


def _traceparent_trace_id(raw: ConsumerRecord) -> str:
    return dict(raw.headers)["traceparent"].decode().split("-")[1]


# --- the stages ------------------------------------------------------------------------------------------------------


def verify_stage(name: str, raw: ConsumerRecord, keyring: Keyring) -> Stage:
    """contracts.verify_record on the raw record; a record that does not verify raises, so it is never timed."""
    def check(envelope: Envelope) -> None:
        # verify_record raises on any refusal; this also catches a stand-in that returns without verifying.
        if not isinstance(envelope, Envelope) or envelope.signature != dict(raw.headers)["ce_signature"].decode():
            raise StageFailed(f"{name}: verify_record did not return the record's own envelope")

    trusted = keyring.get(dict(raw.headers)["ce_keyid"].decode())
    alg = trusted.alg if trusted else "unknown key"
    return Stage(name, f"contracts.verify_record: headers, key, keyring, time, {alg} signature, freshness",
                 lambda: _verify(raw, keyring), check)


def signature_only_stage(raw: ConsumerRecord, keyring: Keyring, name: str = "ed25519_signature_only") -> Stage:
    """TrustedKey.verify alone, on the signing input built once: the signature's share of verify."""
    envelope = Envelope.from_headers(raw.headers)
    trusted = keyring.get(envelope.keyid)
    if trusted is None:
        raise StageFailed(f"{name}: key {envelope.keyid!r} is not in the keyring")
    data = envelope.signing_input(raw.topic, raw.key.decode(), raw.value)

    def check(valid: bool) -> None:
        if valid is not True:  # a bad signature returns False quickly: that must not pass for a verify
            raise StageFailed(f"{name}: the signature does not verify")

    return Stage(name, f"TrustedKey.verify only ({trusted.alg}): the signature part of verify",
                 lambda: trusted.verify(data, envelope.signature), check)


def validate_stage(inputs: Inputs) -> Stage:
    raw, topic = inputs.records[ED25519], REGISTRY.resolve(TOPIC)

    def check(event: Any) -> None:
        if event != inputs.order:
            raise StageFailed("validate: the decoded event is not the order that was sent")

    return Stage("validate", "contracts.decode_keyed_value: pydantic model_validate_json on the bytes + key check",
                 lambda: decode_keyed_value(topic, raw.key, raw.value), check)


def handler_stage(inputs: Inputs) -> Stage:
    def check(outcome: Any) -> None:
        if type(outcome) is not type(inputs.outcome) or outcome.order_id != inputs.order.order_id:
            raise StageFailed("handler: core.decide did not decide on the order")

    return Stage("handler", "services.payments.core.decide on the OrderPlaced (pure; no store, no outbox)",
                 lambda: core.decide(inputs.order, inputs.policy, inputs.now), check)


def sign_stage(name: str, inputs: Inputs, alg: str) -> Stage:
    """contracts.encode of the handler's event, inside the consumer span as the handler runs (its create span follows it)."""
    signer = inputs.signers[alg]

    def check(record: Record) -> None:
        trusted = inputs.keyring.get(record.envelope.keyid)
        data = record.envelope.signing_input(record.topic, record.key, record.value)
        if trusted is None or not trusted.verify(data, record.envelope.signature):
            raise StageFailed(f"{name}: the encoded record's signature does not verify")
        if record.envelope.causation_id != inputs.envelope.id or "traceparent" not in dict(record.transport):
            raise StageFailed(f"{name}: the encoded record lacks its cause or its trace context")

    @contextlib.contextmanager
    def in_consumer_span():
        with worker_tracer(), consumer_span(inputs.records[ED25519], inputs.envelope, GROUP, SERVICE):
            yield

    return Stage(name, f"contracts.encode ({alg}): envelope, JSON, signature, create span + traceparent (parent not sampled)",
                 lambda: encode(inputs.outcome, source=source_of(SERVICE), signer=signer, cause=inputs.envelope),
                 check, in_consumer_span)


def _event_context_of() -> Callable[[Any, Envelope], dict]:
    """fleet.runtime.delivery.outcomes' own per-record log context; its helper takes (record, envelope) or, earlier, a policy too."""
    helper = middlewares._event_context
    if len(inspect.signature(helper).parameters) == 2:
        return helper
    policy = RetryPolicy(group=GROUP)
    return lambda record, envelope: helper(record, envelope, policy)


def log_stage(inputs: Inputs) -> Stage:
    """The per-record context bound as the batch runner binds it, and one `event_handled` line through the worker's
    pipeline."""
    raw, envelope = inputs.records[ED25519], inputs.envelope
    context_of, trace_id = _event_context_of(), _traceparent_trace_id(raw)
    log = structlog.get_logger("fleet.events")  # a proxy of our own: structlog caches it on first use, in this set-up

    def call() -> None:
        with event_context(**context_of(raw, envelope), trace_id=trace_id):
            log.info("event_handled", duration_ms=0.123)

    def check(_: Any) -> None:
        # The last line written to the worker's stdout (a temporary file) must be this record's whole line.
        written = _last_line(_SINKS[-1]) if _SINKS else ""
        lines = [written] if written else []
        line = json.loads(written) if written else {}
        if line.get("event") != "event_handled" or line.get("event_id") != envelope.id or line.get("service") != SERVICE:
            raise StageFailed(f"log: no event_handled line with the record's context was written ({lines[-1:]})")

    return Stage("log", "bound_contextvars(record context) + one event_handled JSON line (structlog → the worker's stdout, a file)",
                 call, check, worker_logging)


def trace_stage(name: str, raw: ConsumerRecord, envelope: Envelope, *, recording: bool, what: str,
                scope: Callable[[], ContextManager] = worker_tracer) -> Stage:
    """fleet.runtime.observe.tracing.consumer_span around nothing: the span a worker opens per record, parent from the record's traceparent."""
    expected_trace = _traceparent_trace_id(raw)

    def call() -> Any:
        with consumer_span(raw, envelope, GROUP, SERVICE) as span:
            return span

    def check(span: Any) -> None:
        # The span has ended by now (is_recording() is False for every ended span): its sampled flag tells which it was.
        if span.get_span_context().trace_flags.sampled != recording or trace_id_of(span) != expected_trace:
            raise StageFailed(f"{name}: the span is not the record's trace, sampled={recording}")

    return Stage(name, what, call, check, scope)


def trace_stages(inputs: Inputs) -> list[Stage]:
    """The provider of a worker's defaults (parent-based, ratio 0.1, exporter none): the consumer span follows the producer's
    decision, so 90 % of flows are the not-sampled case and 10 % the sampled one; then sampled with an exporter behind it."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    envelope = inputs.envelope
    return [
        trace_stage("trace_sampled_out", inputs.records[ED25519], envelope, recording=False,
                    what="consumer_span, parent not sampled (90 % of flows at ratio 0.1): extract, attributes, context"),
        trace_stage("trace_sampled", inputs.sampled, envelope, recording=True,
                    what="consumer_span, parent sampled (10 % of flows), exporter none: a recording span, ended"),
        trace_stage("trace_sampled_exported", inputs.sampled, envelope, recording=True,
                    what="as trace_sampled + BatchSpanProcessor (in-memory exporter): on_end queueing; export off-thread",
                    scope=lambda: worker_tracer(export_to=InMemorySpanExporter())),
    ]


def build_stages(inputs: Inputs) -> list[Stage]:
    """Every synchronous stage, in the order a record meets them."""
    return [
        verify_stage("verify_ed25519", inputs.records[ED25519], inputs.keyring),
        signature_only_stage(inputs.records[ED25519], inputs.keyring),
        verify_stage("verify_hmac", inputs.records[HMAC_SHA256], inputs.keyring),
        validate_stage(inputs),
        handler_stage(inputs),
        sign_stage("sign_ed25519", inputs, ED25519),
        sign_stage("sign_hmac", inputs, HMAC_SHA256),
        log_stage(inputs),
        *trace_stages(inputs),
    ]


# --- timing ----------------------------------------------------------------------------------------------------------


class _Clock:
    """Wall time (perf_counter_ns) and this thread's CPU time of each batch, per call. The CPU figure leaves out the time
    the process waited for a CPU, which on a loaded machine inflates the wall figure."""

    def __init__(self, iterations: int) -> None:
        self.iterations, self.wall_us, self.cpu_us = iterations, [], []

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter_ns(), time.thread_time_ns()

    def stop(self) -> None:
        wall, cpu = time.perf_counter_ns() - self._wall, time.thread_time_ns() - self._cpu
        self.wall_us.append(wall / self.iterations / 1000)
        self.cpu_us.append(cpu / self.iterations / 1000)

    def figures(self, what: str) -> dict:
        return {"median_us": statistics.median(self.wall_us), "min_us": min(self.wall_us), "max_us": max(self.wall_us),
                "cpu_median_us": statistics.median(self.cpu_us), "what": what}


def _checked(stage: Stage, result: Any) -> None:
    try:
        stage.check(result)
    except StageFailed:
        raise
    except Exception as error:  # a check that cannot even read the result: the work was not done either
        raise StageFailed(f"{stage.name}: {type(error).__name__}: {error}") from error


def _first_call(stage: Stage) -> Any:
    try:
        return stage.call()
    except Exception as error:  # e.g. Rejected from verify_record: the stage does not work on these inputs
        raise StageFailed(f"{stage.name}: {type(error).__name__}: {error}") from error


def time_stage(stage: Stage, iterations: int = 2000, samples: int = 7) -> dict:
    """`samples` batches of `iterations` calls, each batch timed with perf_counter_ns; µs per call: median, min, max (and
    the median of CPU time). The result is checked before the warm-up and after every batch, so a call that stopped
    working is never reported. The garbage collector stays on: its share is part of what an event costs."""
    with stage.scope():
        _checked(stage, _first_call(stage))
        call = stage.call
        for _ in range(max(20, iterations // 10)):  # warm-up: lazy imports, caches, structlog's first-use binding
            call()
        clock = _Clock(iterations)
        for _ in range(samples):
            clock.start()
            for _ in range(iterations):
                result = call()
            clock.stop()
            _checked(stage, result)
    return clock.figures(stage.what)


async def faststream_consume(iterations: int = 2000, samples: int = 7) -> dict:
    """A subscriber's `consume` (what its aiokafka fetch loop calls per record) for a trivial bytes handler, under
    TestKafkaBroker. An upper bound: the test broker swaps in a MagicMock logger and records each call in a mock."""
    from faststream.kafka import KafkaBroker, TestKafkaBroker

    # As fleet brokers are made (fleet.runtime.broker.create_broker): access lines at DEBUG, under a worker's INFO.
    broker = KafkaBroker(logger=logging.getLogger("eventfleet.bench"), log_level=logging.DEBUG)
    subscriber = broker.subscriber("bench.in", group_id="bench-stages")
    handled = 0

    @subscriber
    async def on_event(body: bytes) -> None:
        nonlocal handled
        handled += 1

    value = b"x" * 500
    record = ConsumerRecord(topic="bench.in", partition=0, offset=0, timestamp=time.time_ns() // 1_000_000, timestamp_type=0,
                            key=b"ORD-000001", value=value, checksum=None, serialized_key_size=10,
                            serialized_value_size=len(value), headers=[])

    async def consume(count: int) -> None:
        before = handled
        for _ in range(count):
            await subscriber.consume(record)
        if handled - before != count:  # consume swallows a handler's error: count what the handler saw
            raise StageFailed(f"faststream_consume: {handled - before} of {count} records reached the handler")

    async with TestKafkaBroker(broker):
        await consume(max(20, iterations // 10))
        clock = _Clock(iterations)
        for _ in range(samples):
            clock.start()
            await consume(iterations)  # its count check runs inside the clock: one comparison per batch
            clock.stop()
    return clock.figures("FastStream subscriber.consume, bytes handler, TestKafkaBroker (mocks: an upper bound)")


def measure_stages(iterations: int = 2000, samples: int = 7) -> dict[str, dict]:
    """{stage: {"median_us", "min_us", "max_us", "cpu_median_us", "what"}} for every stage, measured in this process.

    Logging and the tracer provider are the workers' own set-ups, each current only while its stages run; the process's
    logging, structlog and OpenTelemetry globals are as they were afterwards (faststream_consume runs its own event loop,
    so call this outside one)."""
    inputs = build_inputs()
    figures = {stage.name: time_stage(stage, iterations, samples) for stage in build_stages(inputs)}
    figures["faststream_consume"] = asyncio.run(faststream_consume(iterations, samples))
    return figures


def stage_table(stages: dict[str, dict]) -> str:
    """The figures as a plain-text table, one stage a line."""
    return format_table([{"stage": name, **figures} for name, figures in stages.items()], TABLE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.stages", description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000, help="calls per timed sample (default 2000)")
    parser.add_argument("--samples", type=int, default=7, help="timed samples per stage (default 7)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    began = time.perf_counter()
    stages = measure_stages(args.iterations, args.samples)
    print(stage_table(stages))
    print(f"\n{args.samples} samples of {args.iterations} calls per stage; µs per call; {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} at start; took {time.perf_counter() - began:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(stages, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
