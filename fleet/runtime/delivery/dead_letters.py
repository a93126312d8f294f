"""Refused records: never silent.

Each is logged with its reason and published to its topic's dead-letter topic before its offset is committed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from contracts import REGISTRY, Registry, UnknownTopic
from contracts.connection import KafkaConnection, client_options
from fleet.runtime.errors import stops_the_producer

__all__ = ["DLQ_HEADERS", "REPLAYED_FROM", "REPLAY_GROUP", "FailureRouter", "KafkaSink", "MemorySink", "Rejection"]

log = structlog.get_logger("fleet.runtime.delivery.dead_letters")

# `fleet dlq replay`'s consumer group (its committed offsets record what was moved), and the header that says where a
# replayed record was: named here, beside a dead letter's headers, because the AsyncAPI document describes them too.
REPLAY_GROUP = "fleet-dlq-replay"
REPLAYED_FROM = "eventfleet-replayed-from"
DLQ_HEADERS = (
    "dlq-reason",
    "dlq-detail",
    "dlq-original-topic",
    "dlq-original-partition",
    "dlq-original-offset",
    "dlq-group",
    "dlq-service",
    "dlq-failed-at",
)


@dataclass(frozen=True)
class Rejection:
    """A refused record: where it was, and why, in one line without secrets."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple
    reason: str
    detail: str
    failures: tuple[tuple[str, str], ...] = ()  # retry-* headers: attempts, first and last failure, error class

    @classmethod
    def of(cls, record: Any, reason: str, detail: str, failures: dict[str, str] | None = None) -> Rejection:
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            tuple(record.headers or ()),
            reason,
            detail[:500],
            tuple((failures or {}).items()),
        )

    @property
    def key_text(self) -> str | None:
        return self.key.decode("utf-8", "replace") if isinstance(self.key, bytes) else self.key

    def dead_letter_headers(self, group: str, service: str) -> list[tuple[str, bytes]]:
        """The original headers, untouched, then where the record came from and why it was refused."""
        ours = {
            "dlq-reason": self.reason,
            "dlq-detail": self.detail,
            "dlq-original-topic": self.topic,
            "dlq-original-partition": str(self.partition),
            "dlq-original-offset": str(self.offset),
            "dlq-group": group,
            "dlq-service": service,
            "dlq-failed-at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        failures = dict(self.failures)
        # A record that failed on a retry topic is dead-lettered as the record of the topic it first came from.
        for origin in ("topic", "partition", "offset"):
            if f"retry-original-{origin}" in failures:
                ours[f"dlq-original-{origin}"] = failures[f"retry-original-{origin}"]
        ours |= failures
        original = [(k, v) for k, v in self.headers if k not in ours]
        return original + [(k, v.encode("utf-8")) for k, v in ours.items()]


class KafkaSink:
    """Sends dead letters with an idempotent, acks=all producer of their own (original headers stay raw bytes)."""

    def __init__(self, bootstrap_servers: str | KafkaConnection, client_id: str, *, make_producer=None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self._make_producer = make_producer or self._aiokafka_producer  # a test passes a fake
        self._producer: AIOKafkaProducer | None = None

    def _aiokafka_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_options(self.bootstrap_servers), client_id=self.client_id, acks="all", enable_idempotence=True
        )

    async def __call__(self, topic: str, key: bytes | None, value: bytes | None, headers: list) -> None:
        if self._producer is None:
            producer = self._make_producer()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()  # the next dead letter tries with a new one; this one must not leak its client
                raise
            self._producer = producer
        try:
            await self._producer.send_and_wait(topic, key=key, value=value, headers=headers)
        except Exception as error:
            if stops_the_producer(
                error
            ):  # every later dead letter would fail the same way: the next one gets a new producer
                await self.close()
            raise

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class MemorySink:
    """Keeps dead letters in a list: for in-memory tests, where there is no broker to send them to."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, dict]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes | None, headers: list) -> None:
        self.sent.append((topic, key, value, {k: v.decode("utf-8", "replace") for k, v in headers}))

    async def close(self) -> None:
        return None


class FailureRouter:
    """Puts a record that failed where it goes next, and waits for the broker, so the offset behind it is safe to
    commit: a refused record (or one out of retries) on `<topic>.dlq`, one to try again on its retry topic."""

    def __init__(self, bootstrap_servers: str | KafkaConnection, service: str, registry: Registry = REGISTRY) -> None:
        self.service = service
        self.registry = registry
        self.sink: KafkaSink | MemorySink = KafkaSink(bootstrap_servers, f"{service}-dlq")
        # Refused records by (topic, reason), for this process's lifetime: what the metrics endpoint will export.
        self.counts: Counter[tuple[str, str]] = Counter()

    async def dead_letter(self, rejection: Rejection, group: str) -> None:
        """Logs the refusal and puts the record on its topic's dead-letter topic, with the reason in `dlq-*` headers."""
        self.counts[(rejection.topic, rejection.reason)] += 1
        log.error(
            "event_rejected",
            topic=rejection.topic,
            partition=rejection.partition,
            offset=rejection.offset,
            key=rejection.key_text,
            reason=rejection.reason,
            detail=rejection.detail,
        )
        try:
            # A record failing on a retry topic goes to the dead-letter topic of the topic it came from.
            target = self.registry.resolve(rejection.topic).dead_letter_topic
        except UnknownTopic:
            return  # not a registry topic: nowhere to put it, and the log line above says what happened
        await self.sink(target, rejection.key, rejection.value, rejection.dead_letter_headers(group, self.service))
        log.info(
            "event_dead_lettered", dead_letter_topic=target, reason=rejection.reason, original_offset=rejection.offset
        )

    async def retry(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Puts a record on a retry topic and waits for the broker, like a dead letter."""
        await self.sink(topic, key, value, headers)

    async def close(self) -> None:
        await self.sink.close()
