"""The operators' side of fleet.control.v1: issue a signed command to a service's replicas, and read what stands.

`fleet pause`, `fleet resume` and `fleet replay` issue; `fleet status` reads. Every replica of a worker obeys the same
commands (fleet.runtime.control), wherever it runs: the command travels on the broker, not to an address."""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from datetime import UTC, datetime

from contracts import (
    REGISTRY,
    ControlIssued,
    Envelope,
    Keyring,
    PartitionOffset,
    PrivateKey,
    Registry,
    Rejected,
)
from contracts.connection import KafkaConnection, client_options
from contracts.publisher import Publisher
from fleet.catalog import WORKERS, entry_of
from fleet.runtime.control import CONTROL_TOPIC, Held, fold, verified_command
from fleet.runtime.keys import OPERATOR_SIGNER

__all__ = ["NotAWorker", "UnknownTopicOfService", "issue", "operator_name", "standing_orders", "topics_read_by"]


class NotAWorker(ValueError):
    """A control command for a service that reads nothing from Kafka (the gateway)."""


class UnknownTopicOfService(ValueError):
    """`--topic` names a topic the service does not read."""


def operator_name() -> str:
    """Who issues a command: FLEET_OPERATOR, else the login name."""
    import os

    return os.environ.get("FLEET_OPERATOR") or getpass.getuser()


def topics_read_by(service: str, registry: Registry = REGISTRY) -> list[str]:
    """The topics a worker reads in its consumer group, the ones a pause or a replay may name."""
    if entry_of(service).kind != "worker":  # UnknownService for a name not in the catalog
        raise NotAWorker(f"{service} consumes nothing from Kafka; only the workers obey: {', '.join(WORKERS)}")
    return [t.name for t in registry.consumed_in_group_by(service)]


def checked_topics(service: str, topics: Iterable[str], registry: Registry = REGISTRY) -> tuple[str, ...]:
    readable = topics_read_by(service, registry)
    for topic in topics:
        if topic not in readable:
            raise UnknownTopicOfService(f"{service} does not read {topic}; it reads {', '.join(readable)}")
    return tuple(topics)


async def issue(
    connection: str | KafkaConnection,
    signer: PrivateKey,
    service: str,
    command: str,
    *,
    topics: Iterable[str] = (),
    group: str | None = None,
    offsets: Iterable[PartitionOffset] = (),
    reason: str = "",
    issued_by: str | None = None,
    registry: Registry = REGISTRY,
) -> Envelope:
    """Signs `command` for `service` with the operators' key and puts it on fleet.control.v1; returns once the broker
    has it. Refuses a service that is not a worker and a topic the service does not read, before anything is sent."""
    event = ControlIssued(
        service=service,
        command=command,
        topics=checked_topics(service, topics, registry),
        group=group,
        offsets=tuple(offsets),
        reason=reason,
        issued_by=issued_by or operator_name(),
        issued_at=datetime.now(UTC),
    )
    async with Publisher(connection, service=OPERATOR_SIGNER, signer=signer, registry=registry) as publisher:
        return await publisher.publish(event)


async def standing_orders(
    connection: str | KafkaConnection,
    keyring: Keyring,
    services: Iterable[str],
    registry: Registry = REGISTRY,
    *,
    groups: dict[str, str] | None = None,
) -> dict[str, Held]:
    """What stands for each service (in its consumer group, from `groups`), folded from the whole control topic as a
    replica folds it (a record that fails verification counts for nothing). A broker without the topic: nothing
    stands."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from fleet.ops.topics import partitions_of

    held = {service: Held(service, (groups or {}).get(service)) for service in services}
    tps = [
        TopicPartition(CONTROL_TOPIC, p)
        for p in range((await partitions_of(connection, [CONTROL_TOPIC])).get(CONTROL_TOPIC, 0))
    ]
    if not tps:
        return held
    consumer = AIOKafkaConsumer(**client_options(connection), enable_auto_commit=False, client_id="fleet-control")
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    try:
                        envelope, event = verified_command(record, keyring, registry)
                    except Rejected:
                        continue
                    if event.service in held:
                        held[event.service], _ = fold(held[event.service], envelope.id, event)
    finally:
        await consumer.stop()
    return held
