"""The gateway's decisions, pure: who holds a token, what it may publish, whether a body fits and is a valid event."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts import REGISTRY, Event, Registry, Topic, TrustedKey, UnknownTopic
from contracts.registry import RetiredTopic

__all__ = [
    "Allowed",
    "Client",
    "Clients",
    "Forbidden",
    "Gone",
    "Invalid",
    "NotFound",
    "Refused",
    "TooLarge",
    "Unauthorized",
    "authenticate",
    "authorize",
    "bearer_token",
    "declared_size",
    "gateway_may_sign",
    "hash_token",
    "parse_event",
    "size_refusal",
]

MAX_CORRELATION_ID = 200  # it travels in a signed Kafka header: bounded, like every other field


def hash_token(token: str) -> str:
    """What the clients file keeps instead of a token: its SHA-256, in lowercase hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Client(BaseModel):
    """An upstream system: its name, the hash of its bearer token, and the topics it may publish to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    token_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the token, lowercase hex; never the token."
    )
    topics: tuple[str, ...] = ()

    def may_publish(self, topic: str) -> bool:
        return topic in self.topics


class Clients(BaseModel):
    """The whole clients file: `{"clients": [{"name": ..., "token_sha256": ..., "topics": [...]}]}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clients: tuple[Client, ...] = ()

    @model_validator(mode="after")
    def _names_and_tokens_are_unique(self) -> Clients:
        for what in ("name", "token_sha256"):
            values = [getattr(c, what) for c in self.clients]
            if len(values) != len(set(values)):
                raise ValueError(f"two clients share a {what}")
        return self

    def named(self, name: str) -> Client | None:
        return next((c for c in self.clients if c.name == name), None)

    def with_client(self, client: Client) -> Clients:
        """The same clients, with `client` added or, if one has its name, replacing it."""
        others = tuple(c for c in self.clients if c.name != client.name)
        return Clients(clients=(*others, client))

    def holding(self, token: str) -> Client | None:
        """The client whose token this is. Every hash is compared, in constant time, so timing tells nothing."""
        digest = hash_token(token)
        found = None
        for client in self.clients:
            if hmac.compare_digest(digest, client.token_sha256) and found is None:
                found = client
        return found


@dataclass(frozen=True)
class Refused:
    """A request the gateway turns down: the HTTP status, a stable reason code and one line for the caller
    (no secrets)."""

    reason: str
    detail: str
    status: ClassVar[int] = 400


class Unauthorized(Refused):
    status = 401


class Forbidden(Refused):
    status = 403


class NotFound(Refused):
    status = 404


class Gone(Refused):
    """A topic closed for writing or retired: its event's newer version is where to publish now."""

    status = 410


class TooLarge(Refused):
    status = 413


@dataclass(frozen=True)
class Invalid(Refused):
    """A body that is not a valid event for its topic; `errors` lists every field error as {loc, msg}."""

    errors: tuple[dict, ...] = field(default=())
    status: ClassVar[int] = 422


@dataclass(frozen=True)
class Allowed:
    """The request may go on: who sent it, and the registry topic it goes to."""

    client: Client
    topic: Topic


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive (RFC 9110)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(clients: Clients, authorization: str | None) -> Client | Unauthorized:
    """The client holding the bearer token; any client may read, so reads need nothing more than this."""
    token = bearer_token(authorization)
    if token is None:
        return Unauthorized("missing_token", "send the client's token as `Authorization: Bearer <token>`")
    client = clients.holding(token)
    if client is None:
        return Unauthorized("unknown_token", "the token is not valid")
    return client


def authorize(
    clients: Clients, authorization: str | None, topic_name: str, registry: Registry = REGISTRY
) -> Allowed | Refused:
    """Who is asking, then whether the topic exists, then whether they may publish to it.

    Authentication comes first, so a caller without a valid token learns nothing, not even which topics exist.
    """
    client = authenticate(clients, authorization)
    if isinstance(client, Refused):
        return client
    try:
        topic = registry.named(topic_name)
    except UnknownTopic as error:
        return NotFound("unknown_topic", str(error))
    if not client.may_publish(topic.name):
        return Forbidden("topic_not_allowed", f"client {client.name} may not publish to {topic.name}")
    try:
        registry.for_writing(topic.model)
    except RetiredTopic as ended:
        return Gone("topic_retired", str(ended))
    return Allowed(client, topic)


def gateway_may_sign(key: TrustedKey | None, topic: Topic) -> Forbidden | None:
    """The gateway's own key must be trusted for the topic, or every consumer would dead-letter what it publishes."""
    if key is None or not key.may_sign(topic.name):
        return Forbidden("gateway_key_not_allowed", f"the gateway's key may not sign {topic.name}")
    return None


def declared_size(content_length: str | None) -> int | None:
    """The body size a request announces; None when it announces none (chunked) or nonsense
    (the real size still counts)."""
    try:
        size = int(content_length) if content_length is not None else None
    except ValueError:
        return None
    return size if size is not None and size >= 0 else None


def size_refusal(size: int | None, topic: Topic) -> TooLarge | None:
    """A body over the topic's `max_bytes` is refused: consumers would refuse the record anyway."""
    if size is not None and size > topic.max_bytes:
        return TooLarge(
            "body_too_large", f"{topic.name} takes at most {topic.max_bytes} bytes; this body has {size} or more"
        )
    return None


def parse_event(topic: Topic, body: bytes, correlation_id: str | None) -> Event | Invalid:
    """The body as the topic's one model; every field error at once (and a bad X-Correlation-Id among them)."""
    errors = _correlation_errors(correlation_id)
    try:
        event = topic.model.model_validate_json(body)
    except ValidationError as error:
        errors += [{"loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors(include_url=False)]
    else:
        if not errors:
            return event
    return Invalid("invalid_event", f"not a valid {topic.model.__name__}: {len(errors)} error(s)", tuple(errors))


def _correlation_errors(correlation_id: str | None) -> list[dict]:
    if correlation_id is None or (0 < len(correlation_id) <= MAX_CORRELATION_ID and correlation_id.isprintable()):
        return []
    return [{"loc": ["header", "X-Correlation-Id"], "msg": f"must be 1 to {MAX_CORRELATION_ID} printable characters"}]
