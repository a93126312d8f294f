"""gateway: an HTTP ingress that validates, signs and publishes events for upstream systems that do not speak Kafka."""

from .app import SERVICE, create_app, serve
from .clients import ClientsFile, KafkaRecordPublisher, RecordPublisher, add_client
from .core import (
    Allowed,
    Client,
    Clients,
    Forbidden,
    Invalid,
    NotFound,
    Refused,
    TooLarge,
    Unauthorized,
    authorize,
    hash_token,
)
from .settings import GatewaySettings

__all__ = [
    "SERVICE",
    "Allowed",
    "Client",
    "Clients",
    "ClientsFile",
    "Forbidden",
    "GatewaySettings",
    "Invalid",
    "KafkaRecordPublisher",
    "NotFound",
    "RecordPublisher",
    "Refused",
    "TooLarge",
    "Unauthorized",
    "add_client",
    "authorize",
    "create_app",
    "hash_token",
    "serve",
]
