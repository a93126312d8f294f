"""The topic registry: the one place that names topics and binds each to exactly one event type, key, owner and size."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import Iterable

from .events import (
    ControlIssued,
    Event,
    InventoryBackordered,
    InventoryReserved,
    NotificationSent,
    OrderPlaced,
    OrderPlacedV2,
    PaymentAuthorized,
    PaymentDeclined,
    ShipmentScheduled,
    StockReceived,
)

__all__ = [
    "REGISTRY",
    "RETRY_TIERS",
    "TOPICS",
    "Registry",
    "RegistryError",
    "RetiredTopic",
    "Topic",
    "UnknownTopic",
    "UnregisteredEvent",
]

TOPIC_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.v[1-9][0-9]*$")
RETRY_TIERS = 3  # retry topics per topic: each consumer group picks its delays (for example 1 s, 10 s, 60 s)
DERIVED_NAME = re.compile(r"^(?P<base>.+?)\.(?:retry\.(?P<tier>[1-9][0-9]*)|dlq)$")
TYPE_PREFIX = "dev.eventfleet."
SCHEMA_ID_PREFIX = "urn:eventfleet:schema:"


class RegistryError(ValueError):
    """The registry itself is inconsistent; raised at import, so a bad edit never ships."""


class UnknownTopic(LookupError):
    """A topic name that the registry does not know."""


class UnregisteredEvent(LookupError):
    """An event type that has no topic in the registry."""


class RetiredTopic(LookupError):
    """A topic closed for writing (`fleet contracts close`) or retired (`fleet contracts retire`): nothing may write it
    any more."""


@dataclass(frozen=True)
class Topic:
    """One topic: its name `<domain>.<event>.v<N>`, the only model it carries, and how it is keyed and sized."""

    name: str
    model: type[Event]
    key_field: str
    owner: str
    description: str
    consumers: tuple[str, ...] = ()
    partitions: int = 6
    max_bytes: int = 16 * 1024
    retention_ms: int = 7 * 24 * 3600 * 1000  # -1: kept for good
    # Read by every replica of each consumer, without a consumer group and without retry tiers (the control topic).
    broadcast: bool = False
    # Retired (`fleet contracts retire`, contracts/lifecycle.json): kept for its history, written and read no more.
    retired: bool = False
    retired_on: str = ""  # the UTC day it was retired (YYYY-MM-DD), as contracts/lifecycle.json says
    # Closed for writing (`fleet contracts close`): its consumers read what is left on it, nothing writes it any more.
    # A retired topic is closed too.
    closed: bool = False
    closed_on: str = ""

    @property
    def family(self) -> str:
        """The topic without its version: `orders.placed` for `orders.placed.v2`."""
        return self.name.rsplit(".v", 1)[0]

    @property
    def version(self) -> int:
        return int(self.name.rsplit(".v", 1)[1])

    @property
    def configs(self) -> dict[str, str]:
        """Topic-level broker settings, applied by `fleet topics apply`."""
        return {
            # The broker stamps each record on arrival, so the freshness window cannot be gamed by the producer's clock.
            "message.timestamp.type": "LogAppendTime",
            "retention.ms": str(self.retention_ms),
        }

    @property
    def type_name(self) -> str:
        """The CloudEvents `type` of every event on this topic, e.g. `dev.eventfleet.orders.placed.v1`."""
        return TYPE_PREFIX + self.name

    @property
    def schema_id(self) -> str:
        """The id of the JSON Schema of this topic's events (`$id` of the exported schema, `ce_dataschema`)."""
        return SCHEMA_ID_PREFIX + self.name

    @property
    def dead_letter_topic(self) -> str:
        """Where consumers put this topic's records that they refuse, with the reason in headers."""
        return f"{self.name}.dlq"

    def retry_topic(self, tier: int) -> str:
        """Where a consumer puts a record whose handler failed transiently, for attempt `tier` + 1 after a delay."""
        if not 1 <= tier <= RETRY_TIERS:
            raise ValueError(f"retry tier {tier} is outside 1..{RETRY_TIERS}")
        return f"{self.name}.retry.{tier}"

    @property
    def retry_topics(self) -> tuple[str, ...]:
        """Its retry tiers; none for a broadcast topic, which nobody retries (a command that fails is dead-lettered)."""
        return () if self.broadcast else tuple(self.retry_topic(tier) for tier in range(1, RETRY_TIERS + 1))

    def key_of(self, event: Event) -> str:
        """The record key of an event on this topic: the registry's key field, as text."""
        return str(getattr(event, self.key_field))


class Registry:
    """All topics, looked up by name or by event type; checks on construction that every rule holds."""

    def __init__(self, topics: Iterable[Topic]) -> None:
        self.topics: tuple[Topic, ...] = tuple(topics)
        self._by_name = {t.name: t for t in self.topics}
        self._by_model = {t.model: t for t in self.topics}
        _check(self.topics, self._by_name, self._by_model)

    def __iter__(self):
        return iter(self.topics)

    def __len__(self) -> int:
        return len(self.topics)

    def named(self, name: str) -> Topic:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name))
            raise UnknownTopic(f"unknown topic {name!r}; the registry has: {known}") from None

    def resolve(self, name: str) -> Topic:
        """The registry topic behind a name: the topic itself, one of its retry topics, or its dead-letter topic."""
        if name in self._by_name:
            return self._by_name[name]
        derived = DERIVED_NAME.match(name)
        if derived and derived["base"] in self._by_name:
            topic = self._by_name[derived["base"]]
            if derived["tier"] is None or int(derived["tier"]) <= RETRY_TIERS:
                return topic
        return self.named(name)  # raises UnknownTopic with the list of known names

    def consumed_by(self, service: str) -> tuple[Topic, ...]:
        return tuple(t for t in self.topics if service in t.consumers)

    def versions(self, topic: Topic) -> tuple[Topic, ...]:
        """Every version of the topic's event, oldest first (`orders.placed.v1`, `orders.placed.v2`)."""
        return tuple(sorted((t for t in self.topics if t.family == topic.family), key=lambda t: t.version))

    def current(self, topic: Topic) -> Topic:
        """The newest version of the topic's event: what producers write and handlers are declared on."""
        return self.versions(topic)[-1]

    def is_superseded(self, topic: Topic) -> bool:
        return self.current(topic) is not topic

    def consumed_in_group_by(self, service: str) -> tuple[Topic, ...]:
        """What the service reads in its consumer group (and retries): every topic it consumes but a broadcast one."""
        return tuple(t for t in self.consumed_by(service) if not t.broadcast)

    def of(self, event_or_model: Event | type[Event]) -> Topic:
        model = event_or_model if isinstance(event_or_model, type) else type(event_or_model)
        try:
            return self._by_model[model]
        except KeyError:
            raise UnregisteredEvent(f"{model.__name__} has no topic in the registry") from None

    def owned_by(self, service: str) -> tuple[Topic, ...]:
        return tuple(t for t in self.topics if t.owner == service)

    def for_writing(self, event_or_model: Event | type[Event]) -> Topic:
        """The topic an event is written to; RetiredTopic when it is closed for writing or retired (publish the current
        version instead)."""
        topic = self.of(event_or_model)
        if topic.closed or topic.retired:
            current = self.current(topic)
            state = f"retired (since {topic.retired_on})" if topic.retired else f"closed (since {topic.closed_on})"
            raise RetiredTopic(
                f"{topic.name} is {state}, contracts/lifecycle.json: nothing may write it; publish {current.name} "
                f"({current.model.__name__}) instead"
            )
        return topic


def _check(topics: tuple[Topic, ...], by_name: dict, by_model: dict) -> None:
    if len(by_name) != len(topics):
        raise RegistryError("a topic name appears twice")
    if len(by_model) != len(topics):
        raise RegistryError(
            "an event type is bound to more than one topic; exactly one type per topic and one topic per type"
        )
    for topic in topics:
        if not TOPIC_NAME.match(topic.name):
            raise RegistryError(f"topic {topic.name!r} is not named <domain>.<event>.v<N>")
        if topic.key_field not in topic.model.model_fields:
            raise RegistryError(
                f"topic {topic.name!r}: key field {topic.key_field!r} is not a field of {topic.model.__name__}"
            )
        if topic.partitions < 1 or topic.max_bytes < 1:
            raise RegistryError(f"topic {topic.name!r}: partitions and max_bytes must be positive")


def with_lifecycle(topics: Iterable[Topic], lifecycle: dict) -> list[Topic]:
    """The topics as `contracts/lifecycle.json` says they stand: the closed and the retired ones marked so, with the
    day (a retired topic is closed too, since the day it was closed or else retired)."""
    retired = {name: str(day) for name, day in dict(lifecycle.get("retired", {})).items()}
    closed = {name: str(day) for name, day in dict(lifecycle.get("closed", {})).items()}
    marked = []
    for topic in topics:
        if topic.name in retired:
            day = closed.get(topic.name, retired[topic.name])
            topic = replace(topic, retired=True, retired_on=retired[topic.name], closed=True, closed_on=day)
        elif topic.name in closed:
            topic = replace(topic, closed=True, closed_on=closed[topic.name])
        marked.append(topic)
    return marked


def lifecycle() -> dict:
    """contracts/lifecycle.json: which topics are closed for writing and which are retired, and since when (`fleet
    contracts close` and `fleet contracts retire` write it)."""
    return dict(json.loads(resources.files(__package__).joinpath("lifecycle.json").read_text()))


TOPICS = [
    Topic(
        name="orders.placed.v1",
        model=OrderPlaced,
        key_field="order_id",
        owner="storefront",
        consumers=("payments", "inventory", "notifications", "tracker"),
        description="Orders placed by customers, before the channel was known; superseded by orders.placed.v2 and "
        "read through the upcaster order_placed_v1_to_v2 until retired.",
    ),
    Topic(
        name="payments.authorized.v1",
        model=PaymentAuthorized,
        key_field="order_id",
        owner="payments",
        consumers=("notifications", "inventory", "tracker"),
        description="Payments authorized for orders.",
    ),
    Topic(
        name="payments.declined.v1",
        model=PaymentDeclined,
        key_field="order_id",
        owner="payments",
        consumers=("notifications", "tracker"),
        description="Payments declined for orders, with the reason.",
    ),
    Topic(
        name="notifications.sent.v1",
        model=NotificationSent,
        key_field="order_id",
        owner="notifications",
        consumers=("tracker",),
        description="Customer notifications recorded for delivery.",
    ),
    Topic(
        name="warehouse.stock_received.v1",
        model=StockReceived,
        key_field="sku",
        owner="warehouse",
        consumers=("inventory",),
        description="Goods received by the warehouse (an upstream system); `fleet demo` seeds stock with them.",
    ),
    Topic(
        name="inventory.reserved.v1",
        model=InventoryReserved,
        key_field="order_id",
        owner="inventory",
        consumers=("shipping", "tracker"),
        description="Stock reserved for paid orders.",
    ),
    Topic(
        name="inventory.backordered.v1",
        model=InventoryBackordered,
        key_field="order_id",
        owner="inventory",
        consumers=("notifications", "tracker"),
        description="Paid orders short of stock.",
    ),
    Topic(
        name="shipments.scheduled.v1",
        model=ShipmentScheduled,
        key_field="order_id",
        owner="shipping",
        consumers=("notifications", "tracker"),
        description="Shipments booked for reserved orders.",
    ),
    Topic(
        name="fleet.control.v1",
        model=ControlIssued,
        key_field="service",
        owner="operator",
        consumers=("payments", "inventory", "shipping", "notifications", "tracker"),
        description="Operators' commands to a service's replicas: pause, resume, seek (`fleet pause`, `fleet "
        "resume`, `fleet replay`). Every replica reads the whole topic, without a consumer group, so one partition "
        "keeps the commands in order and the history is kept for good: a replica that starts reads it first.",
        partitions=1,
        retention_ms=-1,
        broadcast=True,
    ),
    Topic(
        name="orders.placed.v2",
        model=OrderPlacedV2,
        key_field="order_id",
        owner="storefront",
        consumers=("payments", "inventory", "notifications", "tracker"),
        description="Orders placed by customers, with the channel they came through; published by the storefront "
        "(an upstream system), the gateway and `fleet demo`. Supersedes orders.placed.v1.",
    ),
    # `fleet contracts bump` adds a topic's next version here.
]

REGISTRY = Registry(with_lifecycle(TOPICS, lifecycle()))
