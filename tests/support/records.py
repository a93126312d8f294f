"""Raw-record builders: records and headers as Kafka delivers them, for pure tests and for producing bytes as they are."""

from dataclasses import dataclass


def raw_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    """Headers as Kafka delivers them: a list of (name, bytes)."""
    return [(name, value.encode("utf-8")) for name, value in headers.items()]


@dataclass(frozen=True)
class FakeRecord:
    """The few ConsumerRecord fields our code reads, for pure tests."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list
    timestamp: int = 0


def as_raw(record):
    """An eventfleet Record as (topic, key, value, headers) for `produce_raw`."""
    return record.topic, record.key.encode(), record.value, raw_headers(record.headers)
