"""The one place that builds a worker's Kafka broker, its subscribers and its publishers, with the fleet's defaults."""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

import structlog
from faststream import AckPolicy, FastStream
from faststream.specification import AsyncAPI
from faststream.kafka import KafkaBroker

from contracts import REGISTRY, Envelope, Event, Registry, Topic, decode_value, encode, source_of

from .middlewares import event_context_middleware
from .settings import KafkaSettings

__all__ = ["EventPublisher", "WrongTopic", "create_broker", "publisher_for", "subscriber_for", "worker_app"]


class WrongTopic(TypeError):
    """An event handed to a publisher of another topic: refused before anything is sent."""


def create_broker(service: str, kafka: KafkaSettings | None = None, *, registry: Registry = REGISTRY) -> KafkaBroker:
    """A broker with the fleet's producer guarantees and per-message middleware."""
    kafka = kafka or KafkaSettings()
    return KafkaBroker(
        kafka.bootstrap_servers,
        client_id=service,
        # The producer side of at-least-once: every publish waits for all in-sync replicas.
        acks="all",
        enable_idempotence=True,
        allow_auto_create_topics=False,
        request_timeout_ms=kafka.request_timeout_ms,
        graceful_timeout=kafka.graceful_timeout_s,
        middlewares=(event_context_middleware(registry),),
        logger=logging.getLogger(f"eventfleet.{service}"),
        # FastStream's per-message access lines go to DEBUG: our middleware writes one line per event instead.
        log_level=logging.DEBUG,
        description=f"eventfleet service `{service}`",
    )


def worker_app(broker: KafkaBroker, service: str, description: str) -> FastStream:
    """The FastStream application of one service, with its AsyncAPI title and description."""
    from . import __version__

    spec = AsyncAPI(title=f"eventfleet {service}", version=__version__, description=description)
    return FastStream(broker, specification=spec, logger=logging.getLogger(f"eventfleet.{service}"))


def subscriber_for(broker: KafkaBroker, *models: type[Event], group_id: str, registry: Registry = REGISTRY, **options: Any) -> Callable:
    """Subscribes a handler to the registry topics of `models`, in the service's own consumer group.

    Several models share one Kafka consumer: one group member per replica, so starting or stopping a replica
    costs one rebalance, not one per topic.
    """
    topics = [registry.of(model) for model in models]
    return broker.subscriber(
        *(topic.name for topic in topics),
        group_id=group_id,
        # A new group reads the topic's history; an existing group resumes at its committed offset.
        auto_offset_reset="earliest",
        # Commit after the handler; an outcome that raised is logged by the middleware (dead letters come later).
        ack_policy=AckPolicy.ACK,
        # Never let a sender's `reply_to` header make us publish to a topic it names.
        no_reply=True,
        decoder=_decoder_for({topic.name: topic for topic in topics}),
        title=f"on_{'_or_'.join(snake_case(model.__name__) for model in models)}",
        description=" ".join(topic.description for topic in topics),
        **options,
    )


def _decoder_for(topics: dict[str, Topic]) -> Callable[[Any], Event]:
    # Decoding to the record's topic model here means the handler receives an already validated event.
    def decode(message: Any) -> Event:
        return decode_value(topics[message.raw_message.topic], message.body)

    return decode


class EventPublisher:
    """Publishes one registry topic's events with their envelope; `emit` returns once the broker has the record."""

    def __init__(self, broker: KafkaBroker, topic: Topic, service: str, registry: Registry = REGISTRY) -> None:
        self.topic = topic
        self.registry = registry
        self.source = source_of(service)
        self._publisher = broker.publisher(
            topic.name,
            title=f"to_{snake_case(topic.model.__name__)}",
            description=topic.description,
            schema=topic.model,
        )

    async def emit(self, event: Event, *, cause: Envelope | None = None, correlation_id: str | None = None) -> Envelope:
        if not isinstance(event, self.topic.model):
            raise WrongTopic(f"{type(event).__name__} does not belong on {self.topic.name} (it carries {self.topic.model.__name__})")
        record = encode(event, source=self.source, cause=cause, correlation_id=correlation_id, registry=self.registry)
        await self._publisher.publish(
            record.value,
            key=record.key.encode("utf-8"),
            headers=record.headers,
            correlation_id=record.envelope.correlation_id,
        )
        structlog.get_logger("fleet.events").debug("event_emitted", emitted_id=record.envelope.id, emitted_topic=record.topic)
        return record.envelope


def publisher_for(broker: KafkaBroker, model: type[Event], *, service: str, registry: Registry = REGISTRY) -> EventPublisher:
    return EventPublisher(broker, registry.of(model), service, registry)


def snake_case(name: str) -> str:
    """`OrderPlaced` → `order_placed`, for FastStream's `on_`/`to_` names."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
