"""eventfleet contracts: what the fleet says. Event models, the topic registry and the wire envelope; no Kafka client."""

from .envelope import (
    CONTENT_TYPE,
    Envelope,
    EnvelopeError,
    InvalidPayload,
    Record,
    decode_value,
    describe_errors,
    encode,
    new_event_id,
    source_of,
)
from .events import Event, NotificationSent, OrderItem, OrderPlaced, PaymentAuthorized, PaymentDeclined
from .registry import REGISTRY, Registry, RegistryError, Topic, UnknownTopic, UnregisteredEvent

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "Envelope",
    "EnvelopeError",
    "Event",
    "InvalidPayload",
    "NotificationSent",
    "OrderItem",
    "OrderPlaced",
    "PaymentAuthorized",
    "PaymentDeclined",
    "Record",
    "Registry",
    "RegistryError",
    "Topic",
    "UnknownTopic",
    "UnregisteredEvent",
    "decode_value",
    "describe_errors",
    "encode",
    "new_event_id",
    "source_of",
]
