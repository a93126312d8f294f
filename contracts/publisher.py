"""An async publisher for upstream Python systems: correct records (registry topic, key, envelope) through aiokafka."""

from __future__ import annotations

import asyncio
from typing import Iterable

from aiokafka import AIOKafkaProducer

from .connection import KafkaConnection, client_options
from .envelope import Envelope, Record, encode, source_of
from .events import Event
from .registry import REGISTRY, Registry
from .signing import PrivateKey

__all__ = ["Publisher"]


class Publisher:
    """Publishes signed events to the fleet's topics, for a system outside the fleet:

        async with Publisher("127.0.0.1:9092", service="storefront", signer=PrivateKey.load(path)) as p:
            await p.publish(order)

    On a secure cluster, pass a `KafkaConnection` instead of the address:
    `KafkaConnection.from_env(username="storefront")` reads FLEET_KAFKA_BOOTSTRAP_SERVERS,
    FLEET_KAFKA_SECURITY_PROTOCOL=SASL_SSL, FLEET_KAFKA_SSL_CAFILE and the password (FLEET_KAFKA_SASL_PASSWORD_FILE,
    ...); TLS and SCRAM-SHA-512 follow from it.

    Every record is signed (wire format v1). Idempotent producer with acks=all:
    `publish` returns once the broker has it.
    """

    def __init__(
        self,
        bootstrap_servers: str | KafkaConnection,
        *,
        service: str,
        signer: PrivateKey,
        registry: Registry = REGISTRY,
        **producer_options,
    ) -> None:
        self.source = source_of(service)
        self.signer = signer
        self.registry = registry
        self._producer = AIOKafkaProducer(
            **client_options(bootstrap_servers),
            client_id=service,
            acks="all",
            enable_idempotence=True,
            **producer_options,
        )

    async def __aenter__(self) -> Publisher:
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()  # a refused start still holds a client: `async with` never calls __aexit__ then
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._producer.stop()

    def record(self, event: Event, *, correlation_id: str | None = None, cause: Envelope | None = None) -> Record:
        """The signed record of an event; RetiredTopic when its topic is retired (`fleet contracts retire`)."""
        self.registry.for_writing(event)
        return encode(
            event,
            source=self.source,
            signer=self.signer,
            cause=cause,
            correlation_id=correlation_id,
            registry=self.registry,
        )

    async def publish(
        self, event: Event, *, correlation_id: str | None = None, cause: Envelope | None = None
    ) -> Envelope:
        return await self.send(self.record(event, correlation_id=correlation_id, cause=cause))

    async def send(self, record: Record) -> Envelope:
        """Sends a prepared record and waits for the broker's acknowledgement."""
        delivery = await self._send(record)
        await delivery
        return record.envelope

    async def publish_many(self, events: Iterable[Event], *, correlation_id: str | None = None) -> list[Envelope]:
        """Sends all, then waits for all: batched on the wire, and still returns only when the broker has every one."""
        records = [self.record(event, correlation_id=correlation_id) for event in events]
        deliveries = [await self._send(record) for record in records]
        await asyncio.gather(*deliveries)
        return [record.envelope for record in records]

    async def _send(self, record: Record) -> asyncio.Future:
        return await self._producer.send(
            record.topic, value=record.value, key=record.key.encode("utf-8"), headers=record.raw_headers()
        )
