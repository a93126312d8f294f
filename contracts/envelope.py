"""The wire envelope: CloudEvents 1.0 binary-mode Kafka headers around an event's JSON value (pure code, no Kafka client)."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Iterable, Sequence

from pydantic import ValidationError

from .events import Event
from .registry import REGISTRY, Registry, Topic

__all__ = [
    "CONTENT_TYPE",
    "Envelope",
    "EnvelopeError",
    "InvalidPayload",
    "Record",
    "decode_value",
    "describe_errors",
    "encode",
    "new_event_id",
    "source_of",
]

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
SOURCE_PREFIX = "/eventfleet/"

# Header names of the CloudEvents Kafka protocol binding (binary mode) plus our extension attributes.
H_SPECVERSION = "ce_specversion"
H_ID = "ce_id"
H_SOURCE = "ce_source"
H_TYPE = "ce_type"
H_TIME = "ce_time"
H_DATASCHEMA = "ce_dataschema"
H_SUBJECT = "ce_subject"
H_CORRELATION = "ce_correlationid"
H_CAUSATION = "ce_causationid"
H_CONTENT_TYPE = "content-type"
REQUIRED_HEADERS = (H_SPECVERSION, H_ID, H_SOURCE, H_TYPE, H_TIME, H_DATASCHEMA, H_SUBJECT, H_CORRELATION, H_CONTENT_TYPE)
ENVELOPE_HEADERS = frozenset(REQUIRED_HEADERS + (H_CAUSATION,))


class EnvelopeError(ValueError):
    """A record whose headers are not a valid envelope: the reason says which header and why."""


class InvalidPayload(ValueError):
    """A record whose value is not a valid event for its topic: the reason lists every field error."""


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort by creation and index well."""
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def source_of(service: str) -> str:
    """The CloudEvents `source` of a service, e.g. `/eventfleet/payments`."""
    return SOURCE_PREFIX + service


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Envelope:
    """The CloudEvents attributes of one event: who said it, when, in which flow, caused by what."""

    id: str
    source: str
    type: str
    time: str
    dataschema: str
    subject: str
    correlation_id: str
    causation_id: str | None = None

    @classmethod
    def new(
        cls,
        topic: Topic,
        event: Event,
        *,
        source: str,
        cause: Envelope | None = None,
        correlation_id: str | None = None,
        now: datetime | None = None,
    ) -> Envelope:
        """The envelope of a new event: a caused event inherits its cause's flow, a root event starts one."""
        event_id = new_event_id()
        flow = cause.correlation_id if cause else (correlation_id or event_id)
        return cls(
            id=event_id,
            source=source,
            type=topic.type_name,
            time=_utc_text(now or datetime.now(timezone.utc)),
            dataschema=topic.schema_id,
            subject=topic.key_of(event),
            correlation_id=flow,
            causation_id=cause.id if cause else None,
        )

    def to_headers(self) -> dict[str, str]:
        headers = {
            H_SPECVERSION: SPEC_VERSION,
            H_ID: self.id,
            H_SOURCE: self.source,
            H_TYPE: self.type,
            H_TIME: self.time,
            H_DATASCHEMA: self.dataschema,
            H_SUBJECT: self.subject,
            H_CORRELATION: self.correlation_id,
            H_CONTENT_TYPE: CONTENT_TYPE,
        }
        if self.causation_id:
            headers[H_CAUSATION] = self.causation_id
        return headers

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]]) -> Envelope:
        """Reads raw Kafka headers; every envelope header must appear exactly once and be UTF-8."""
        found = _single_envelope_headers(headers)
        missing = [name for name in REQUIRED_HEADERS if name not in found]
        if missing:
            raise EnvelopeError(f"missing header(s): {', '.join(missing)}")
        if found[H_SPECVERSION] != SPEC_VERSION:
            raise EnvelopeError(f"ce_specversion is {found[H_SPECVERSION]!r}, expected {SPEC_VERSION!r}")
        if found[H_CONTENT_TYPE] != CONTENT_TYPE:
            raise EnvelopeError(f"content-type is {found[H_CONTENT_TYPE]!r}, expected {CONTENT_TYPE!r}")
        return cls(
            id=found[H_ID],
            source=found[H_SOURCE],
            type=found[H_TYPE],
            time=found[H_TIME],
            dataschema=found[H_DATASCHEMA],
            subject=found[H_SUBJECT],
            correlation_id=found[H_CORRELATION],
            causation_id=found.get(H_CAUSATION) or None,
        )

    def with_correlation(self, correlation_id: str) -> Envelope:
        return replace(self, correlation_id=correlation_id)


def _single_envelope_headers(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, raw in headers:
        if name not in ENVELOPE_HEADERS:
            continue  # other headers (tracing, FastStream's own) are not ours to judge
        if name in found:
            raise EnvelopeError(f"header {name} appears more than once")
        try:
            found[name] = raw.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            raise EnvelopeError(f"header {name} is not UTF-8 text") from None
    return found


@dataclass(frozen=True)
class Record:
    """What goes on the wire for one event: topic, key, value bytes and envelope headers."""

    topic: str
    key: str
    value: bytes
    envelope: Envelope

    @property
    def headers(self) -> dict[str, str]:
        return self.envelope.to_headers()


def encode(
    event: Event,
    *,
    source: str,
    cause: Envelope | None = None,
    correlation_id: str | None = None,
    registry: Registry = REGISTRY,
) -> Record:
    """The record for an event: its registry topic and key, its JSON value, a fresh envelope."""
    topic = registry.of(event)
    value = event.model_dump_json().encode("utf-8")
    envelope = Envelope.new(topic, event, source=source, cause=cause, correlation_id=correlation_id)
    return Record(topic=topic.name, key=envelope.subject, value=value, envelope=envelope)


def decode_value(topic: Topic, value: bytes | None) -> Event:
    """The event in a record's value, validated against the topic's one model."""
    if value is None:
        raise InvalidPayload("the record has no value")
    if len(value) > topic.max_bytes:
        raise InvalidPayload(f"value is {len(value)} bytes, over the topic's limit of {topic.max_bytes}")
    try:
        return topic.model.model_validate_json(value)
    except ValidationError as error:
        raise InvalidPayload(describe_errors(error)) from None


def describe_errors(error: ValidationError) -> str:
    """Every field error on one line: `items.0.quantity: Input should be greater than or equal to 1; ...`."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "(value)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
