"""A flow's timeline for `fleet trace`: raw Kafka records of one correlation id → sorted, de-duplicated entries.

Pure (nothing here talks to Kafka); the timeline comes out as text or JSON."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Iterable, Sequence

from contracts import REGISTRY, Registry
from contracts.envelope import H_CAUSATION, H_CORRELATION, H_ID, H_SOURCE, H_TIME, H_TYPE, SOURCE_PREFIX
from contracts.registry import TYPE_PREFIX

__all__ = [
    "DEAD_LETTER",
    "PUBLISHED",
    "RETRY",
    "Entry",
    "Timeline",
    "TraceRecord",
    "build_timeline",
    "correlation_ids_of_order",
    "entry_of",
    "format_header",
    "format_lines",
    "format_summary",
    "header_text",
    "matches",
    "parse_since",
    "service_of",
    "short_type",
    "timeline_json",
]

PUBLISHED, RETRY, DEAD_LETTER = "published", "retry", "dead_letter"
DETAIL_LIMIT = 120
RETRY_TOPIC = re.compile(r"^(?P<base>.+)\.retry\.(?P<tier>[1-9][0-9]*)$")
SINCE_DURATION = re.compile(r"^\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d|w)\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# ---- Reading headers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceRecord:
    """One record as read from the broker: where it sits, its raw key and headers, and the broker's timestamp (ms)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = -1

    @classmethod
    def of(cls, record) -> TraceRecord:
        """From an aiokafka ConsumerRecord (or anything with the same fields); the value is not kept."""
        return cls(
            record.topic, record.partition, record.offset, record.key, tuple(record.headers or ()), record.timestamp
        )


def _text(raw: bytes | None) -> str | None:
    """Bytes as text, or None when they are not UTF-8 (such a value can never equal an id someone typed)."""
    if raw is None or isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def header_text(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    """The first header of that name as text for a person.

    `<N bytes, not UTF-8>` when it is not text, None when absent."""
    raw = next((value for key, value in headers if key == name), None)
    if raw is None:
        return None
    text = _text(raw)
    return text if text is not None else f"<{len(raw)} bytes, not UTF-8>"


def matches(headers: Sequence[tuple[str, bytes]], correlation_ids: Iterable[str]) -> bool:
    """Whether any `ce_correlationid` header of the record is one of the ids.

    A broken record with the header twice counts too."""
    wanted = set(correlation_ids)
    return any(key == H_CORRELATION and _text(value) in wanted for key, value in headers)


def correlation_ids_of_order(records: Iterable[TraceRecord], order_id: str) -> list[str]:
    """The correlation ids on the records keyed by the order id, those of main-topic records first, each once."""
    key = order_id.encode("utf-8")
    found: list[tuple[bool, int, str]] = []
    for record in records:
        if record.key != key:
            continue
        for name, value in record.headers:
            text = _text(value) if name == H_CORRELATION else None
            if text:
                found.append((_kind_of(record.topic)[0] != PUBLISHED, record.timestamp, text))
    ordered: list[str] = []
    for _derived, _at, text in sorted(found, key=lambda f: (f[0], f[1])):
        if text not in ordered:
            ordered.append(text)
    return ordered


def _kind_of(topic: str) -> tuple[str, int | None]:
    if topic.endswith(".dlq"):
        return DEAD_LETTER, None
    retry = RETRY_TOPIC.match(topic)
    if retry:
        return RETRY, int(retry["tier"])
    return PUBLISHED, None


def service_of(source: str | None) -> str:
    """`/eventfleet/payments` → `payments`; another source is shown as it is, a missing one as `?`."""
    if not source:
        return "?"
    return source.removeprefix(SOURCE_PREFIX) or source


def short_type(ce_type: str | None, registry: Registry = REGISTRY) -> str:
    """`dev.eventfleet.payments.authorized.v1` → `PaymentAuthorized` (the registry's model).

    A type the registry does not have is shown without its prefix."""
    if not ce_type:
        return "?"
    for topic in registry:
        if topic.type_name == ce_type:
            return topic.model.__name__
    return ce_type.removeprefix(TYPE_PREFIX)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ms_time(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms is not None and ms >= 0 else None


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _short(text: str | None, limit: int = DETAIL_LIMIT) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


# ---- Entries --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One line of the timeline: an event as a record shows it (published, scheduled for a retry, or dead-lettered)."""

    topic: str
    partition: int
    offset: int
    broker_timestamp_ms: int
    ce_time: str | None
    service: str
    event_type: str
    ce_type: str | None
    event_id: str | None
    correlation_id: str | None
    causation_id: str | None
    key: str | None
    kind: str
    retry_attempt: int | None = None
    retry_group: str | None = None
    retry_reason: str | None = None
    dlq_group: str | None = None
    dlq_reason: str | None = None
    dlq_detail: str | None = None
    caused_by: str | None = None  # the short type of the causing event, when it is in the timeline
    copies: tuple[str, ...] = ()  # every position the same record was seen at, this one first

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def seen(self) -> int:
        return max(1, len(self.copies))

    @property
    def at(self) -> datetime | None:
        """When it happened: the broker's append time (one clock for every topic), else ce_time."""
        return _ms_time(self.broker_timestamp_ms) or _parse_time(self.ce_time)

    @property
    def identity(self) -> tuple:
        """Two records with this equal are one record seen twice: the same event, on the same topic, with the same fate.

        A retry or dead letter of an event keeps its ce_id, so the fate is part of it.
        A record without ce_id is unique."""
        if not self.event_id:
            return ("no-id", self.topic, self.partition, self.offset)
        return (
            self.event_id,
            self.topic,
            self.kind,
            self.retry_attempt,
            self.retry_group,
            self.dlq_group,
            self.dlq_reason,
        )

    @property
    def outcome(self) -> str:
        if self.kind == RETRY:
            group = f" (group {self.retry_group})" if self.retry_group else ""
            attempt = self.retry_attempt if self.retry_attempt is not None else "?"
            return f"retry {attempt} scheduled: {self.retry_reason or '-'}{group}"
        if self.kind == DEAD_LETTER:
            detail = f" ({_short(self.dlq_detail)})" if self.dlq_detail and self.dlq_detail != self.dlq_reason else ""
            return f"dead-lettered by {self.dlq_group or '?'}: {self.dlq_reason or 'unknown'}{detail}"
        return PUBLISHED


def entry_of(record: TraceRecord, registry: Registry = REGISTRY) -> Entry:
    """What one record tells about its event; header values that are not UTF-8 are shown as `<N bytes, not UTF-8>`."""
    headers = record.headers
    kind, tier = _kind_of(record.topic)
    ce_type = header_text(headers, H_TYPE)
    attempt = _number(header_text(headers, "retry-attempt"))
    return Entry(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        broker_timestamp_ms=record.timestamp if record.timestamp is not None else -1,
        ce_time=header_text(headers, H_TIME),
        service=service_of(header_text(headers, H_SOURCE)),
        event_type=short_type(ce_type, registry),
        ce_type=ce_type,
        event_id=header_text(headers, H_ID),
        correlation_id=header_text(headers, H_CORRELATION),
        causation_id=header_text(headers, H_CAUSATION),
        key=None if record.key is None else (_text(record.key) or f"<{len(record.key)} bytes, not UTF-8>"),
        kind=kind,
        retry_attempt=(attempt if attempt is not None else tier) if kind == RETRY else attempt,
        retry_group=header_text(headers, "retry-group"),
        retry_reason=_short(header_text(headers, "retry-reason")),
        dlq_group=header_text(headers, "dlq-group"),
        dlq_reason=header_text(headers, "dlq-reason"),
        dlq_detail=header_text(headers, "dlq-detail"),
    )


def _order_key(entry: Entry) -> tuple:
    at = entry.at
    ce = _parse_time(entry.ce_time)
    far = datetime.max.replace(tzinfo=UTC)
    return (at or far, ce or far, entry.topic, entry.partition, entry.offset)


@dataclass(frozen=True)
class Timeline:
    """A flow as the broker holds it: its entries in time order, each record once."""

    correlation_ids: tuple[str, ...]
    entries: tuple[Entry, ...] = field(default_factory=tuple)
    order_id: str | None = None
    since: datetime | None = None

    @property
    def events(self) -> int:
        """Distinct events (ce_ids): an event retried or dead-lettered is still one event."""
        return len({e.event_id or e.position for e in self.entries})

    @property
    def services(self) -> list[str]:
        seen: list[str] = []
        for entry in self.entries:
            if entry.service not in seen:
                seen.append(entry.service)
        return seen

    @property
    def dead_letters(self) -> int:
        return sum(1 for e in self.entries if e.kind == DEAD_LETTER)

    @property
    def retries(self) -> int:
        return sum(1 for e in self.entries if e.kind == RETRY)

    @property
    def duplicates(self) -> int:
        return sum(e.seen - 1 for e in self.entries)

    @property
    def first(self) -> datetime | None:
        times = [e.at for e in self.entries if e.at]
        return min(times) if times else None

    @property
    def last(self) -> datetime | None:
        times = [e.at for e in self.entries if e.at]
        return max(times) if times else None

    @property
    def duration_s(self) -> float | None:
        return (self.last - self.first).total_seconds() if self.first and self.last else None


def build_timeline(
    records: Iterable[TraceRecord],
    correlation_ids: str | Iterable[str],
    *,
    order_id: str | None = None,
    since: datetime | None = None,
    registry: Registry = REGISTRY,
) -> Timeline:
    """The records of the flow(s), in time order; a record seen twice (the outbox publishes at least once) is one entry
    that lists both positions; each entry whose cause is in the timeline names the cause's type."""
    ids = (correlation_ids,) if isinstance(correlation_ids, str) else tuple(correlation_ids)
    entries = sorted((entry_of(r, registry) for r in records if matches(r.headers, ids)), key=_order_key)
    kept: dict[tuple, Entry] = {}
    for entry in entries:
        first = kept.get(entry.identity)
        if first is None:
            kept[entry.identity] = replace(entry, copies=(entry.position,))
        else:
            kept[entry.identity] = replace(first, copies=(*first.copies, entry.position))
    types: dict[str, str] = {}  # event id → its short type
    for entry in kept.values():
        if entry.event_id and entry.kind == PUBLISHED:
            types.setdefault(entry.event_id, entry.event_type)
    for entry in kept.values():  # an event seen only as a retry or a dead letter is still a known cause
        if entry.event_id:
            types.setdefault(entry.event_id, entry.event_type)
    final = tuple(replace(e, caused_by=types.get(e.causation_id)) if e.causation_id else e for e in kept.values())
    return Timeline(ids, final, order_id=order_id, since=since)


# ---- Output ---------------------------------------------------------------------------------------------------------


def _clock(moment: datetime | None, with_date: bool = True) -> str:
    if moment is None:
        return "?"
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f" if with_date else "%H:%M:%S.%f")
    return text[:-3]


def _ce_clock(entry: Entry) -> str:
    parsed = _parse_time(entry.ce_time)
    return _clock(parsed, with_date=False) if parsed else (entry.ce_time or "?")


def format_lines(timeline: Timeline) -> list[str]:
    """One line per entry, in columns.

    Broker time, ce_time, service, event type, topic[partition]@offset, event id, cause, and the outcome."""
    rows = []
    for e in timeline.entries:
        cause = e.caused_by or e.causation_id or "-"
        copies = f"  ×{e.seen}" if e.seen > 1 else ""
        rows.append(
            (
                _clock(e.at),
                f"ce {_ce_clock(e)}",
                e.service,
                e.event_type,
                e.position,
                e.event_id or "-",
                f"caused-by {cause}",
                e.outcome + copies,
            )
        )
    if not rows:
        return []
    # Every column but the last (the outcome, which runs on) is padded to its widest cell.
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]


def format_header(timeline: Timeline) -> str:
    flows = ", ".join(timeline.correlation_ids)
    order = f"order {timeline.order_id}, " if timeline.order_id else ""
    since = f" since {_clock(timeline.since)} UTC" if timeline.since else ""
    return f"trace of {order}correlation id {flows}{since} (times UTC: broker append time, then ce_time)"


def format_summary(timeline: Timeline) -> str:
    """The closing line: how many events, records and services, over how long, with how many dead letters and retries.

    `summary: 3 event(s) in 4 record(s), 3 service(s) (storefront, payments, notifications),
    2026-11-24 16:00:00.130 → 16:00:01.020 (0.890 s), 1 dead letter(s), 0 retry record(s)` (one line; the last time
    has its date only when it is another day)."""
    records = len(timeline.entries)
    parts = [f"{timeline.events} event(s) in {records} record(s)"]
    if timeline.duplicates:
        parts[0] += f" (+{timeline.duplicates} duplicate(s) shown once)"
    services = timeline.services
    parts.append(f"{len(services)} service(s) ({', '.join(services)})")
    first, last, duration = timeline.first, timeline.last, timeline.duration_s
    if first is not None and last is not None and duration is not None:
        other_day = first.date() != last.date()
        parts.append(f"{_clock(first)} → {_clock(last, with_date=other_day)} ({duration:.3f} s)")
    parts.append(f"{timeline.dead_letters} dead letter(s)")
    parts.append(f"{timeline.retries} retry record(s)")
    return "summary: " + ", ".join(parts)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


def entry_json(entry: Entry) -> dict:
    return {
        "time": _iso(entry.at),
        "broker_timestamp_ms": entry.broker_timestamp_ms if entry.broker_timestamp_ms >= 0 else None,
        "ce_time": entry.ce_time,
        "service": entry.service,
        "event_type": entry.event_type,
        "ce_type": entry.ce_type,
        "topic": entry.topic,
        "partition": entry.partition,
        "offset": entry.offset,
        "key": entry.key,
        "event_id": entry.event_id,
        "correlation_id": entry.correlation_id,
        "causation_id": entry.causation_id,
        "caused_by": entry.caused_by,
        "kind": entry.kind,
        "outcome": entry.outcome,
        "retry": {"attempt": entry.retry_attempt, "group": entry.retry_group, "reason": entry.retry_reason}
        if entry.kind == RETRY
        else None,
        "dead_letter": {"group": entry.dlq_group, "reason": entry.dlq_reason, "detail": entry.dlq_detail}
        if entry.kind == DEAD_LETTER
        else None,
        "seen": entry.seen,
        "copies": list(entry.copies),
    }


def timeline_json(timeline: Timeline) -> dict:
    """The same timeline for scripts: `{correlation_ids, order_id, since, entries: [...], summary: {...}}`."""
    return {
        "correlation_ids": list(timeline.correlation_ids),
        "order_id": timeline.order_id,
        "since": _iso(timeline.since),
        "entries": [entry_json(e) for e in timeline.entries],
        "summary": {
            "events": timeline.events,
            "records": len(timeline.entries),
            "duplicates": timeline.duplicates,
            "services": timeline.services,
            "first": _iso(timeline.first),
            "last": _iso(timeline.last),
            "duration_s": timeline.duration_s,
            "dead_letters": timeline.dead_letters,
            "retries": timeline.retries,
        },
    }


# ---- --since --------------------------------------------------------------------------------------------------------


def parse_since(text: str, now: datetime) -> datetime:
    """`24h`, `90m`, `2d`, `30s`, `1w` ago, or an RFC 3339 moment (`2026-11-24T16:00:00Z`; no zone means UTC)."""
    duration = SINCE_DURATION.match(text)
    if duration:
        return now - timedelta(seconds=float(duration["amount"]) * UNIT_SECONDS[duration["unit"]])
    moment = _parse_time(text.strip())
    if moment is None:
        raise ValueError(f"--since {text!r} is neither a duration (24h, 90m, 2d) nor a time (2026-11-24T16:00:00Z)")
    if moment > now:
        raise ValueError(f"--since {text!r} is in the future")
    return moment
