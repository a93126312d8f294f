"""Services on FastStream's in-memory test broker: their outbox relay publishing into it, and what they publish captured."""

from dataclasses import dataclass
from typing import Any


@dataclass
class Captured:
    """An event some handler published, as it would travel: key, headers, decoded event."""

    key: str
    headers: dict
    event: object


def capture(broker, model) -> list[Captured]:
    """Registers a listener on the topic of `model` on an in-memory broker; returns the list it fills."""
    from faststream.kafka import KafkaMessage

    from contracts import REGISTRY, decode_value

    topic = REGISTRY.of(model)
    seen: list[Captured] = []

    @broker.subscriber(topic.name, group_id=f"capture-{topic.name}")
    async def listener(body: Any, message: KafkaMessage) -> None:
        raw = message.raw_message
        headers = {k: v.decode() for k, v in raw.headers}
        seen.append(Captured(raw.key.decode(), headers, decode_value(topic, raw.value)))

    return seen


class InMemoryProducer:
    """Stands in for an outbox relay's Kafka producer in in-memory tests: publishes into FastStream's test broker."""

    def __init__(self) -> None:
        self.broker = None  # set once the app exists: `producer.broker = app.broker`

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, key: bytes, headers: list):
        import asyncio

        await self.broker.publish(value, topic, key=key, headers={k: v.decode() for k, v in headers})
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def in_memory(create_app, settings):
    """A service app whose outbox relay publishes into the in-memory broker: inside `async with TestKafkaBroker(app.broker)`,
    `await app.start()` opens its store, and `await app.stop()` lets the relay publish what was committed."""
    from fleet.runtime.delivery.dead_letters import MemorySink

    producer = InMemoryProducer()
    app = create_app(settings, producer=producer)
    producer.broker = app.broker
    app.broker.failures.sink = MemorySink()  # dead letters and retries stay in memory too
    return app
