"""The one place that builds a worker's Kafka broker, its subscribers and its publishers, with the fleet's defaults."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import types
import typing
from typing import TYPE_CHECKING, Any, Callable, Union

import structlog
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLScram256, SASLScram512
from faststream.specification import AsyncAPI

from contracts import (
    REGISTRY,
    UPCASTERS,
    Envelope,
    Event,
    Record,
    Registry,
    Topic,
    UnknownTopic,
    encode,
    source_of,
)
from contracts.connection import KafkaConnection
from fleet.runtime.adapters import FleetConsumer, kafka_producer_of, use_consumer_class
from fleet.runtime.control import CONTROL_TOPIC, Hold, attach_control
from fleet.runtime.delivery.batches import BatchRunner, BatchScope, batch_subscriber_options
from fleet.runtime.delivery.commits import deferred_sends
from fleet.runtime.delivery.dead_letters import FailureRouter
from fleet.runtime.delivery.outcomes import (
    RecordOutcomes,
    Subscription,
    WorkerState,
    current_envelope,
)
from fleet.runtime.delivery.retries import DEFAULT_DELAYS_S, RetryPolicy
from fleet.runtime.faults import Faults, FaultSettings
from fleet.runtime.keys import KeyStore
from fleet.runtime.settings import KafkaSettings, KeySettings, LogSettings

if TYPE_CHECKING:
    from fleet.runtime.observe.http import WorkerHttp

__all__ = [
    "ContractViolation",
    "EventPublisher",
    "FleetBroker",
    "WrongTopic",
    "create_broker",
    "faststream_security",
    "publisher_for",
    "subscriber_for",
    "worker_app",
]


# One logger for every emit: `structlog.get_logger(...)` is a new lazy proxy per call, which binds anew on first use,
# about 6 µs per emitted event even for a debug line that is filtered out.
_events_log = structlog.get_logger("fleet.events")


class WrongTopic(TypeError):
    """An event handed to a publisher of another topic: refused before anything is sent."""


class ContractViolation(TypeError):
    """A handler that expects another model than the one its topic carries: the worker refuses to start."""


class FleetBroker(KafkaBroker):
    """A KafkaBroker that knows its service, its keys, its delivery engine and its subscriptions, and checks its
    handlers at start."""

    def __init__(
        self,
        bootstrap_servers: list[str],
        *,
        service: str,
        kafka: KafkaSettings,
        keys: KeyStore,
        failures: FailureRouter,
        state: WorkerState,
        outcomes: RecordOutcomes,
        registry: Registry = REGISTRY,
        **options: Any,
    ) -> None:
        super().__init__(bootstrap_servers, **options)
        self.service, self.kafka, self.keys, self.registry = service, kafka, keys, registry
        self.failures, self.state, self.outcomes = failures, state, outcomes
        self.subscriptions: list[Subscription] = []  # one per FastStream subscriber that subscriber_for made
        self.batch_runners: list[BatchRunner] = []
        # What opens around each batch: a stateful worker's store transaction (attach_store adds it).
        self.batch_scopes: list[BatchScope] = []
        self.worker_http: WorkerHttp | None = None  # the worker's HTTP port, once attach_http gave it one
        # The operators' standing orders (fleet.control.v1): what every consumer of this worker reads before it fetches.
        self.hold = Hold(service, registry)

    async def _connect(self) -> Any:
        await super()._connect()
        # Every subscriber's consumer is a FleetConsumer: it reports a refused fetch at once.
        use_consumer_class(
            self,
            functools.partial(
                FleetConsumer,
                fetch_failed=self._fetch_failed,
                idle_wait_ms=self.kafka.fetch_max_wait_ms,
                linger_ms=self.kafka.batch_linger_ms,
                hold=self.hold,
                control_topic=CONTROL_TOPIC,
            ),
        )
        return self.config.broker_config.builder

    @property
    def producer(self) -> Any:
        """The broker's aiokafka producer once it is connected (None on FastStream's in-memory test broker)."""
        return kafka_producer_of(self)

    async def start(self) -> None:
        check_one_type_per_topic(self, self.registry)
        try:
            await self.state.log_in()
            await super().start()  # a consumer refused its topic or group raises here, before anything is consumed
        except Exception as error:
            denied = self.state.report_if_refused(error, "starting its consumers and producers")
            if denied and self.state.denials.first is not None:  # reporting it made it the first, if none was
                raise self.state.denials.first from None
            raise

    async def stop(self, *args: Any, **kwargs: Any) -> None:
        self.state.stopping = True  # handlers waiting for a retry's due time give up at once
        await super().stop(*args, **kwargs)
        for runner in self.batch_runners:
            runner.close()
        await self.failures.close()

    def _fetch_failed(self, consumer: FleetConsumer, error: BaseException) -> None:
        """FastStream's consume loop logs a Kafka error and tries again every 5 s, forever: a refusal (an ACL revoked
        while the worker runs) is reported once instead, and stops the worker."""
        topics = ", ".join(sorted(consumer.subscription()))
        self.state.report_if_refused(error, f"consuming {topics} in group {consumer.group}")


def create_broker(
    service: str,
    kafka: KafkaSettings | None = None,
    keys: KeySettings | None = None,
    *,
    registry: Registry = REGISTRY,
) -> FleetBroker:
    """A broker with the fleet's producer guarantees, its keys, and per-record verification."""
    kafka, keys = kafka or KafkaSettings(), keys or KeySettings()
    connection = kafka.connection(service)  # each service is its own SCRAM user on a secure cluster
    key_store = KeyStore.for_signer(keys.dir, service, check_every_s=keys.reload_every_s)
    failures = FailureRouter(connection, service, registry)
    state = WorkerState(service, Faults(FaultSettings()))
    state.connection = connection
    outcomes = RecordOutcomes(
        key_store,
        failures,
        state,
        registry=registry,
        window_s=keys.window_s,
        log_payloads=LogSettings().payloads,
    )
    broker = FleetBroker(
        # A list: FastStream hands a string to aiokafka as one address, so "a:9092,b:9092" would never bootstrap.
        [server.strip() for server in connection.bootstrap_servers.split(",")],
        service=service,
        kafka=kafka,
        keys=key_store,
        failures=failures,
        state=state,
        outcomes=outcomes,
        registry=registry,
        security=faststream_security(connection),
        client_id=service,
        metadata_max_age_ms=kafka.metadata_max_age_ms,
        # The producer side of at-least-once: every publish waits for all in-sync replicas.
        acks="all",
        linger_ms=kafka.linger_ms,
        enable_idempotence=True,
        allow_auto_create_topics=False,
        request_timeout_ms=kafka.request_timeout_ms,
        graceful_timeout=kafka.graceful_timeout_s,
        logger=logging.getLogger(f"eventfleet.{service}"),
        # FastStream's per-message access lines go to DEBUG: our middleware writes one line per event instead.
        log_level=logging.DEBUG,
        description=f"eventfleet service `{service}`",
    )
    attach_control(broker)
    return broker


def faststream_security(connection: KafkaConnection) -> BaseSecurity | None:
    """FastStream's form of the connection's TLS and SCRAM settings (None: plaintext)."""
    if connection.security_protocol == "SASL_SSL":
        scram = SASLScram512 if connection.sasl_mechanism == "SCRAM-SHA-512" else SASLScram256
        username, password = connection.sasl_credentials()
        return scram(username, password, ssl_context=connection.ssl_context(), use_ssl=True)
    if connection.security_protocol == "SSL":
        return BaseSecurity(ssl_context=connection.ssl_context(), use_ssl=True)
    return None


def worker_app(broker: KafkaBroker, service: str, description: str) -> FastStream:
    """The FastStream application of one service, with its AsyncAPI title and description."""
    from fleet import __version__

    spec = AsyncAPI(title=f"eventfleet {service}", version=__version__, description=description)
    return FastStream(broker, specification=spec, logger=logging.getLogger(f"eventfleet.{service}"))


def subscriber_for(
    broker: FleetBroker,
    *models: type[Event],
    group_id: str,
    retry_delays_s: tuple[float, ...] = DEFAULT_DELAYS_S,
    handler_timeout_s: float = 30.0,
    registry: Registry = REGISTRY,
    batch_max_records: int | None = None,
    **options: Any,
) -> Callable:
    """Subscribes a handler to the registry topics of `models`, in the service's own consumer group, and to their retry
    topics: one subscriber per delay, each in a group of its own, so waiting for a due retry never holds up new records.

    Several models share one Kafka consumer: one group member per replica, so starting or stopping a replica
    costs one rebalance, not one per topic.

    Every subscriber takes up to `batch_max_records` records per poll (default: FLEET_KAFKA_BATCH_MAX_RECORDS; 1 is one
    record at a time) and runs them through fleet.runtime.delivery.batches: the handler runs once per event, in order,
    with the same checks and outcomes; a stateful worker's store commits once per batch, and the offsets are committed
    once its outcomes are durable. A retry tier's records also wait for their due time.
    """
    topics = [registry.of(model) for model in models]
    # The older versions of each event, read through their upcasters until retired: the handler sees only `models`.
    older = upcast_sources(models, registry)
    topics += list(older)
    by_name = {name: topic for topic in topics for name in (topic.name, *topic.retry_topics)}
    # `on_order_placed` for OrderPlacedV2 too: a subscriber keeps its name from one version of its event to the next.
    name = f"on_{'_or_'.join(re.sub(r'_v[0-9]+$', '', snake_case(model.__name__)) for model in models)}"
    max_records = broker.kafka.batch_max_records if batch_max_records is None else batch_max_records
    if max_records < 1:
        raise ValueError(f"batch_max_records is {max_records}: at least 1 record per poll (1 is one at a time)")

    def subscribe(names: list[str], group: str, policy: RetryPolicy, title: str, handler: Callable) -> Any:
        subscription = Subscription(policy)
        static: dict[str, Any] = (
            {"group_instance_id": instance_id(group), "session_timeout_ms": broker.kafka.session_timeout_ms}
            if broker.kafka.static_membership and "group_instance_id" not in options
            else {}
        )
        subscriber = broker.subscriber(
            *names,
            **batch_subscriber_options(broker.kafka.fetch_max_wait_ms, max_records),
            group_id=group,
            max_poll_interval_ms=max_poll_interval_ms(broker.kafka, policy),
            # A new group reads the topic's history; an existing group resumes at its committed offset.
            auto_offset_reset="earliest",
            title=title,
            description=" ".join(topic.description for topic in topics),
            **static,
            **options,
        )
        subscription.subscriber = subscriber
        broker.subscriptions.append(subscription)
        return subscriber(_batch_handler(broker, subscription, handler, by_name))

    def register(handler: Callable) -> Callable:
        broker.hold.belongs_to(group_id)
        per_event = _per_event_call(handler, models, {topic.model: target for topic, target in older.items()})
        policy = RetryPolicy(group_id, retry_delays_s, handler_timeout_s)
        wrapped = subscribe([t.name for t in topics], group_id, policy, name, per_event)
        for tier in range(1, len(retry_delays_s) + 1):
            policy = RetryPolicy(group_id, retry_delays_s, handler_timeout_s, tier)
            retry_names = [t.retry_topic(tier) for t in topics]
            subscribe(retry_names, f"{group_id}.retry.{tier}", policy, f"{name}_retry_{tier}", per_event)
        return wrapped

    return register


def upcast_sources(models: tuple[type[Event], ...], registry: Registry = REGISTRY) -> dict[Topic, type[Event]]:
    """The registry topics, not retired, whose model upcasts to one of `models` (an older version of its event), each
    with the model it upcasts to."""
    found: dict[Topic, type[Event]] = {}
    for topic in registry:
        if topic.retired or topic.model in models:
            continue
        for model in models:
            if UPCASTERS.path(topic.model, model):
                found[topic] = model
                break
    return found


def _per_event_call(
    handler: Callable, models: tuple[type[Event], ...], upcast_to: dict[type[Event], type[Event]] | None = None
) -> Callable:
    """What FastStream calls with the decoded event: the service's handler, given the verified envelope directly when it
    has an `envelope` parameter. Not `envelope = Context()`: FastStream's dependency injection resolves such a parameter
    in a task group and a worker thread, per event (about 200 µs, docs/performance.md).

    An event of an older version (`upcast_to`: its model → the handler's) is upcast first: the handler sees only its
    own models, while the log line and the span keep the record's own topic and type."""
    wants_envelope = "envelope" in inspect.signature(handler).parameters
    upcasts = upcast_to or {}

    async def on_event(event: Any) -> Any:
        target = upcasts.get(type(event))
        if target is not None:
            event = UPCASTERS.upcast(event, target)
        return await (handler(event, envelope=current_envelope()) if wants_envelope else handler(event))

    # FastStream documents and checks the payload from this signature: the topic models, as the handler declares them.
    payload = models[0] if len(models) == 1 else Union[models]
    on_event.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # mypy's functions have no such attribute
        [inspect.Parameter("event", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=payload)]
    )
    on_event.__annotations__ = {"event": payload}
    on_event.__name__ = on_event.__qualname__ = handler.__name__
    on_event.__doc__ = handler.__doc__
    on_event.per_event_handler = getattr(handler, "per_event_handler", handler)  # type: ignore[attr-defined]
    return on_event


def _batch_handler(
    broker: FleetBroker, subscription: Subscription, handler: Callable, topics: dict[str, Topic]
) -> Callable:
    """What FastStream calls with each batch's raw records: the runner, which calls `handler` once per event."""
    runner = BatchRunner(
        handler,
        topics,
        broker.outcomes,
        subscription,
        scopes=broker.batch_scopes,
        committed=broker.state.metrics.last_commit.set_to_current_time,
        verify_threads=broker.kafka.verify_threads,
    )
    broker.batch_runners.append(runner)

    async def on_batch(records: Any) -> None:
        await runner(records)

    on_batch.__name__ = on_batch.__qualname__ = handler.__name__
    on_batch.__doc__ = handler.__doc__
    # What check_one_type_per_topic inspects; `handler` is _per_event_call's, which has it (function attributes are
    # beyond mypy's types).
    on_batch.per_event_handler = handler.per_event_handler  # type: ignore[attr-defined]
    return on_batch


def instance_id(group: str) -> str:
    """Static membership: `<group>-<replica id>`, e.g. `payments-payments-2`, `payments.retry.1-payments-2`. The replica
    id comes from FLEET_REPLICA_ID (set by `fleet up`; in Kubernetes, set it per pod, e.g. to the pod's name)."""
    import os

    replica = os.environ.get("FLEET_REPLICA_ID")
    if not replica:
        raise RuntimeError(
            "FLEET_KAFKA_STATIC_MEMBERSHIP=true needs FLEET_REPLICA_ID, unique per process (e.g. payments-1)"
        )
    return f"{group}-{replica}"


def max_poll_interval_ms(kafka: KafkaSettings, policy: RetryPolicy) -> int:
    """A retry subscriber waits in its handler until a record is due: its consumer must not count that as stuck."""
    if not policy.tier:
        return kafka.max_poll_interval_ms
    waits_s = policy.delays_s[policy.tier - 1] + policy.handler_timeout_s + 30.0
    return max(kafka.max_poll_interval_ms, int(waits_s * 1000))


def check_one_type_per_topic(broker: KafkaBroker, registry: Registry = REGISTRY) -> None:
    """Every handler's event parameter must accept exactly the registry models of the topics it listens to, each
    directly or through an upcaster (an older version of its event)."""
    for subscriber in broker.subscribers:
        names = getattr(subscriber, "topic_names_for_subscribe", [])
        expected = set()
        for name in names:
            try:
                expected.add(registry.resolve(name).model)
            except UnknownTopic as error:
                raise ContractViolation(str(error)) from None
        for call in subscriber.calls:
            declared_call = call.handler._declared_call
            declared = _event_models_of(getattr(declared_call, "per_event_handler", declared_call))
            upcast = {m for m in expected - declared if any(UPCASTERS.path(m, d) for d in declared)}
            if declared != expected - upcast:
                got = ", ".join(sorted(m.__name__ for m in declared)) or "no event model"
                want = ", ".join(sorted(m.__name__ for m in expected))
                raise ContractViolation(
                    f"handler {declared_call.__name__} on {', '.join(names)} takes {got}; the registry says {want}"
                )


def _event_models_of(handler: Callable) -> set[type]:
    first = next(iter(inspect.signature(handler).parameters), None)
    if first is None:
        return set()
    annotation = typing.get_type_hints(handler).get(first, Any)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return set(typing.get_args(annotation))
    return {annotation}


class EventPublisher:
    """Publishes one registry topic's events, signed by the worker's current key."""

    def __init__(self, broker: FleetBroker, topic: Topic, registry: Registry = REGISTRY) -> None:
        self.topic = topic
        self.registry = registry
        self.keys = broker.keys
        self.broker = broker
        self.source = source_of(broker.service)
        self._publisher = broker.publisher(
            topic.name,
            title=f"to_{snake_case(topic.model.__name__)}",
            description=topic.description,
            schema=topic.model,
        )

    def record(self, event: Event, *, cause: Envelope | None = None, correlation_id: str | None = None) -> Record:
        """The signed record for `event`, not sent: for a transactional outbox, which the relay publishes later."""
        if not isinstance(event, self.topic.model):
            raise WrongTopic(
                f"{type(event).__name__} does not belong on {self.topic.name} (it carries {self.topic.model.__name__})"
            )
        return encode(
            event,
            source=self.source,
            signer=self.keys.signer(),
            cause=cause,
            correlation_id=correlation_id,
            registry=self.registry,
        )

    async def emit(self, event: Event, *, cause: Envelope | None = None, correlation_id: str | None = None) -> Envelope:
        """Sends the signed event. Inside a handler it does not wait for the broker's ack: the record's offset is
        committed only once every ack arrived (fleet.runtime.delivery.commits), so the promise holds: no input is
        committed before its output is on the broker. Outside a handler it waits. For a handler that also changes state,
        use the outbox (fleet.runtime.store)."""
        record = self.record(event, cause=cause, correlation_id=correlation_id)
        pending = deferred_sends()
        producer = self.broker.producer
        if producer is not None:
            # Straight to aiokafka's producer: FastStream's publish path (its message building, middlewares and
            # logging) cost more per event than the send itself (docs/performance.md). The producer batches on the wire.
            sent: Any = await producer.send(
                record.topic, record.value, key=record.key.encode("utf-8"), headers=record.raw_headers()
            )
        else:  # FastStream's in-memory test broker: its publisher delivers to the subscribers
            sent = await self._publisher.publish(
                record.value,
                key=record.key.encode("utf-8"),
                headers=record.headers,
                correlation_id=record.envelope.correlation_id,
                no_confirm=pending is not None,
            )
        if pending is not None and inspect.isawaitable(sent):  # the in-memory test broker returns nothing to wait for
            pending.append(typing.cast(asyncio.Future, sent))
        elif inspect.isawaitable(sent):
            await sent
        _events_log.debug("event_emitted", emitted_id=record.envelope.id, emitted_topic=record.topic)
        return record.envelope


def publisher_for(broker: FleetBroker, model: type[Event], *, registry: Registry = REGISTRY) -> EventPublisher:
    return EventPublisher(broker, registry.of(model), registry)


def snake_case(name: str) -> str:
    """`OrderPlaced` → `order_placed`, for FastStream's `on_`/`to_` names."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
