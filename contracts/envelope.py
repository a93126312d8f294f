"""The wire envelope: CloudEvents 1.0 binary-mode Kafka headers around an event's JSON value, signed.

Pure code, no Kafka client."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Iterable, Sequence

from pydantic import ValidationError

from .events import Event
from .registry import REGISTRY, Registry, Topic
from .signing import Keyring, PrivateKey, signing_input
from .tracing import trace_headers

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_WINDOW_S",
    "Envelope",
    "EnvelopeError",
    "InvalidPayload",
    "Record",
    "Rejected",
    "decode_keyed_value",
    "decode_value",
    "describe_errors",
    "encode",
    "new_event_id",
    "sign",
    "source_of",
    "verify",
    "verify_record",
]

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
SOURCE_PREFIX = "/eventfleet/"
DEFAULT_WINDOW_S = 300.0

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
H_KEYID = "ce_keyid"
H_SIGNATURE = "ce_signature"
H_CONTENT_TYPE = "content-type"
REQUIRED_HEADERS = (
    H_SPECVERSION,
    H_ID,
    H_SOURCE,
    H_TYPE,
    H_TIME,
    H_DATASCHEMA,
    H_SUBJECT,
    H_CORRELATION,
    H_CONTENT_TYPE,
    H_KEYID,
    H_SIGNATURE,
)
ENVELOPE_HEADERS = frozenset((*REQUIRED_HEADERS, H_CAUSATION))
_SPEC_VERSION_RAW = SPEC_VERSION.encode("ascii")
_CONTENT_TYPE_RAW = CONTENT_TYPE.encode("ascii")


class Rejected(ValueError):
    """A record the fleet refuses; `reason` is a stable code (docs/wire-format.md),
    `detail` one line without secrets."""

    reason = "rejected"

    def __init__(self, detail: str, reason: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason or type(self).reason
        self.detail = detail


class EnvelopeError(Rejected):
    """Headers that are not a valid, signed envelope for the record's topic."""

    reason = "invalid_header"


class InvalidPayload(Rejected):
    """A value that is not a valid event for its topic: the detail lists every field error."""

    reason = "invalid_payload"


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort by creation and index well."""
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    # uuid.UUID(int=value)'s text, written directly: the UUID object cost more than the id (once per event emitted).
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def source_of(service: str) -> str:
    """The CloudEvents `source` of a service, e.g. `/eventfleet/payments`."""
    return SOURCE_PREFIX + service


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# RFC 3339 in UTC, as the fleet writes it: `2026-11-24T16:00:00.123456Z` (fraction optional, up to 6 digits).
UTC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def _parse_utc(text: str) -> datetime:
    if not UTC_TIME.match(text):
        raise EnvelopeError(f"ce_time {text!r} is not RFC 3339 in UTC (YYYY-MM-DDTHH:MM:SS[.ffffff]Z)")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EnvelopeError(f"ce_time {text!r} is not a valid time") from None


@dataclass(frozen=True)
class Envelope:
    """The CloudEvents attributes of one event: who said it, when, in which flow, caused by what,
    signed by which key."""

    id: str
    source: str
    type: str
    time: str
    dataschema: str
    subject: str
    correlation_id: str
    causation_id: str | None = None
    keyid: str = ""
    signature: str = ""

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
        keyid: str = "",
    ) -> Envelope:
        """The (unsigned) envelope of a new event: a caused event inherits its cause's flow, a root event starts one.
        `keyid`: the key that is to sign it (`encode` signs it in place, without copying it)."""
        event_id = new_event_id()
        flow = cause.correlation_id if cause else (correlation_id or event_id)
        return cls(
            id=event_id,
            source=source,
            type=topic.type_name,
            time=_utc_text(now or datetime.now(UTC)),
            dataschema=topic.schema_id,
            subject=topic.key_of(event),
            correlation_id=flow,
            causation_id=cause.id if cause else None,
            keyid=keyid,
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
        if self.keyid:
            headers[H_KEYID] = self.keyid
            headers[H_SIGNATURE] = self.signature
        return headers

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]]) -> Envelope:
        """Reads raw Kafka headers; every envelope header must appear exactly once and be UTF-8."""
        found = _single_envelope_headers(headers)
        missing = [name for name in REQUIRED_HEADERS if name not in found]
        if missing:
            raise EnvelopeError(f"missing header(s): {', '.join(missing)}", "missing_header")
        if found[H_SPECVERSION] != SPEC_VERSION:
            raise EnvelopeError(f"ce_specversion is {found[H_SPECVERSION]!r}, expected {SPEC_VERSION!r}")
        if found[H_CONTENT_TYPE] != CONTENT_TYPE:
            raise EnvelopeError(f"content-type is {found[H_CONTENT_TYPE]!r}, expected {CONTENT_TYPE!r}")
        if H_CAUSATION in found and not found[H_CAUSATION]:
            raise EnvelopeError("ce_causationid is empty: a root event leaves the header out")
        return cls(
            id=found[H_ID],
            source=found[H_SOURCE],
            type=found[H_TYPE],
            time=found[H_TIME],
            dataschema=found[H_DATASCHEMA],
            subject=found[H_SUBJECT],
            correlation_id=found[H_CORRELATION],
            causation_id=found.get(H_CAUSATION),
            keyid=found[H_KEYID],
            signature=found[H_SIGNATURE],
        )

    def signed_fields(self) -> tuple[str, ...]:
        return (self.keyid, self.id, self.type, self.source, self.time, self.correlation_id, self.causation_id or "")

    def signing_input(self, topic: str, key: str, value: bytes) -> bytes:
        return signing_input(
            keyid=self.keyid,
            topic=topic,
            key=key,
            event_id=self.id,
            event_type=self.type,
            source=self.source,
            time=self.time,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            value=value,
        )

    def with_correlation(self, correlation_id: str) -> Envelope:
        return replace(self, correlation_id=correlation_id)


def _single_envelope_headers(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, raw in headers:
        if name not in ENVELOPE_HEADERS:
            continue  # other headers (tracing, FastStream's own) are not ours to judge
        if name in found:
            raise EnvelopeError(f"header {name} appears more than once", "duplicate_header")
        try:
            found[name] = raw.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            raise EnvelopeError(f"header {name} is not UTF-8 text") from None
    return found


@dataclass(frozen=True)
class Record:
    """What goes on the wire for one event: topic, key, value bytes, envelope headers, and unsigned transport headers
    (W3C `traceparent`, which every hop rewrites, so it cannot be signed)."""

    topic: str
    key: str
    value: bytes
    envelope: Envelope
    transport: tuple[tuple[str, bytes], ...] = ()

    @property
    def headers(self) -> dict[str, str]:
        return self.envelope.to_headers() | {name: value.decode("utf-8", "replace") for name, value in self.transport}

    def raw_headers(self) -> list[tuple[str, bytes]]:
        """`headers` as Kafka takes them, in the same order (Envelope.to_headers'), without the dict in between: every
        record emitted goes through here once, and a stateful worker's outbox row a second time."""
        envelope = self.envelope
        raw = [
            (H_SPECVERSION, _SPEC_VERSION_RAW),
            (H_ID, envelope.id.encode("utf-8")),
            (H_SOURCE, envelope.source.encode("utf-8")),
            (H_TYPE, envelope.type.encode("utf-8")),
            (H_TIME, envelope.time.encode("utf-8")),
            (H_DATASCHEMA, envelope.dataschema.encode("utf-8")),
            (H_SUBJECT, envelope.subject.encode("utf-8")),
            (H_CORRELATION, envelope.correlation_id.encode("utf-8")),
            (H_CONTENT_TYPE, _CONTENT_TYPE_RAW),
        ]
        if envelope.causation_id:
            raw.append((H_CAUSATION, envelope.causation_id.encode("utf-8")))
        if envelope.keyid:
            raw.append((H_KEYID, envelope.keyid.encode("utf-8")))
            raw.append((H_SIGNATURE, envelope.signature.encode("utf-8")))
        raw.extend(self.transport)
        return raw


def _refuse_line_feeds(key: str, envelope: Envelope) -> None:
    # The signed input joins fields with "\n": a field holding one could shift content into its neighbour unseen.
    # One search of the fields joined (by a character that is no line feed), not one per field: on every record.
    if "\n" in " ".join((key, *envelope.signed_fields())):
        raise EnvelopeError(
            "a signed field (key, ce_id, ce_type, ce_source, ce_time, ce_correlationid, ce_causationid, "
            "ce_keyid) holds a line feed"
        )


def sign(record: Record, key: PrivateKey) -> Record:
    """The same record with `ce_keyid` and `ce_signature` from `key`; ce_time is kept (re-signing keeps it too)."""
    envelope = _signed_in_place(replace(record.envelope, keyid=key.kid, signature=""), record, key)
    return Record(record.topic, record.key, record.value, envelope, record.transport)


def _signed_in_place(envelope: Envelope, record: Record, key: PrivateKey) -> Envelope:
    """`envelope`, carrying `key`'s id, with its signature of `record`'s topic, key and value written in: the envelope
    must be the caller's own, just made (one copy, not two, per record signed)."""
    _refuse_line_feeds(record.key, envelope)
    object.__setattr__(envelope, "signature", key.sign(envelope.signing_input(record.topic, record.key, record.value)))
    return envelope


def encode(
    event: Event,
    *,
    source: str,
    signer: PrivateKey,
    cause: Envelope | None = None,
    correlation_id: str | None = None,
    registry: Registry = REGISTRY,
    now: datetime | None = None,
) -> Record:
    """The signed record for an event: its registry topic and key, its JSON value, a fresh envelope.

    The same record as `with_trace_context(sign(Record(...), signer))`, made once: the envelope is built with its key id
    and signed in place, and the trace headers go straight in (every emitted event comes through here)."""
    topic = registry.of(event)
    value = event.model_dump_json().encode("utf-8")
    envelope = Envelope.new(
        topic, event, source=source, cause=cause, correlation_id=correlation_id, now=now, keyid=signer.kid
    )
    record = Record(topic=topic.name, key=envelope.subject, value=value, envelope=envelope)
    _signed_in_place(envelope, record, signer)
    # The record is ours, made here: its trace headers go straight in (what `with_trace_context` would copy it for).
    object.__setattr__(record, "transport", trace_headers(record))
    return record


def verify_record(
    topic_name: str,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    timestamp_ms: int,
    keyring: Keyring,
    *,
    registry: Registry = REGISTRY,
    window_s: float = DEFAULT_WINDOW_S,
) -> Envelope:
    """Checks a raw record before anyone trusts a byte of it; returns its envelope or raises `Rejected` with a reason.

    Order: size, headers (each exactly once), type, key, key id, topic allowed, validity, signature, freshness.
    The value's model is checked by `decode_value` afterwards.
    """
    # A retry topic carries its topic's events: the same type and model, signed for the name they travel on.
    topic = registry.resolve(topic_name)
    if value is not None and len(value) > topic.max_bytes:
        raise Rejected(f"value is {len(value)} bytes, over the topic's limit of {topic.max_bytes}", "oversize")
    envelope = Envelope.from_headers(headers)
    if envelope.type != topic.type_name:
        raise Rejected(
            f"ce_type is {envelope.type!r}; topic {topic.name} carries only {topic.type_name!r}", "wrong_type"
        )
    if envelope.dataschema != topic.schema_id:
        raise EnvelopeError(f"ce_dataschema is {envelope.dataschema!r}; topic {topic.name} has {topic.schema_id!r}")
    record_key = _key_text(key)
    if envelope.subject != record_key:
        raise EnvelopeError(f"ce_subject {envelope.subject!r} is not the record key {record_key!r}")
    _refuse_line_feeds(record_key, envelope)
    trusted = keyring.get(envelope.keyid)
    if trusted is None:
        raise Rejected(f"unknown key id {envelope.keyid!r}", "unknown_key")
    if not trusted.may_sign(topic_name):
        raise Rejected(f"key {trusted.kid} may not sign {topic_name}", "key_not_allowed")
    signed_at = _parse_utc(envelope.time)
    if not trusted.valid_at(signed_at):
        raise Rejected(f"key {trusted.kid} is not valid at {envelope.time}", "key_expired")
    if not trusted.verify(envelope.signing_input(topic_name, record_key, value or b""), envelope.signature):
        raise Rejected(f"signature does not match (key {trusted.kid})", "bad_signature")
    drift = abs(timestamp_ms / 1000 - signed_at.timestamp())
    if drift > window_s:
        raise Rejected(f"ce_time is {drift:.0f}s from the record's timestamp; the window is {window_s:.0f}s", "stale")
    return envelope


def _key_text(key: bytes | None) -> str:
    if not key:
        raise Rejected("the record has no key", "invalid_key")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("the record key is not UTF-8", "invalid_key") from None


def decode_value(topic: Topic, value: bytes | None) -> Event:
    """The event in a record's value, validated against the topic's one model."""
    if value is None:
        raise InvalidPayload("the record has no value")
    if len(value) > topic.max_bytes:
        raise Rejected(f"value is {len(value)} bytes, over the topic's limit of {topic.max_bytes}", "oversize")
    try:
        return topic.model.model_validate_json(value)
    except ValidationError as error:
        raise InvalidPayload(describe_errors(error)) from None


def decode_keyed_value(topic: Topic, key: bytes | None, value: bytes | None) -> Event:
    """The event in a record's value, which must also carry the record's key in the topic's key field."""
    event = decode_value(topic, value)
    if key is None or topic.key_of(event).encode("utf-8") != key:
        raise Rejected(f"the record key is not the value's {topic.key_field} ({topic.key_of(event)!r})", "invalid_key")
    return event


def verify(
    topic_name: str,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    timestamp_ms: int,
    keyring: Keyring,
    *,
    registry: Registry = REGISTRY,
    window_s: float = DEFAULT_WINDOW_S,
) -> tuple[Envelope, Event]:
    """Everything wire format v1 promises, for a consumer outside the fleet:
    the verified envelope and the typed event."""
    envelope = verify_record(
        topic_name, key, value, headers, timestamp_ms, keyring, registry=registry, window_s=window_s
    )
    topic = registry.resolve(topic_name)
    return envelope, decode_keyed_value(topic, key, value)


def describe_errors(error: ValidationError) -> str:
    """Every field error on one line: `items.0.quantity: Input should be greater than or equal to 1; ...`."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "(value)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
