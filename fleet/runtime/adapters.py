"""The one place that reaches into FastStream's and aiokafka's internals; everything else uses their public hooks.

Each reach below says why no supported hook does the job. `tests/unit/test_adapters.py` fails loudly when an upgrade
of either library changes what is reached into, and pyproject.toml pins both versions.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

__all__ = ["PINNED", "FleetConsumer", "fetched_position", "use_consumer_class"]

# The versions whose internals this module was written against (and pyproject.toml pins).
PINNED = {"faststream": "0.7.8", "aiokafka": "0.14.0"}


class FleetConsumer(AIOKafkaConsumer):
    """aiokafka's consumer, with two public methods overridden (a subclass, no patching):

    - `getone` and `getmany` tell the worker about a Kafka error before FastStream's consume loop sees it. That loop
      logs the error and tries again every 5 s, forever; a refusal (an ACL revoked while the worker runs) must instead
      be reported once and stop the worker.
    - `stop` first commits what the handlers finished. FastStream stops a consumer once its in-flight handlers are done
      (or the graceful timeout cut them), and aiokafka's `stop` calls no rebalance listener, so without this a clean
      stop would leave handled records behind to redo.
    """

    def __init__(
        self,
        *topics: str,
        fetch_failed: Callable[[FleetConsumer, KafkaError], None] | None = None,
        before_stop: Callable[[FleetConsumer], Awaitable[None]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(*topics, **options)
        self.group = options.get("group_id")
        self._fetch_failed = fetch_failed
        self._before_stop = before_stop

    async def getone(self, *partitions: TopicPartition) -> Any:
        try:
            return await super().getone(*partitions)
        except KafkaError as error:
            self._report(error)
            raise

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        try:
            return await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as error:
            self._report(error)
            raise

    async def stop(self) -> None:
        if self._before_stop is not None:
            await self._before_stop(self)
        await super().stop()

    def _report(self, error: KafkaError) -> None:
        if self._fetch_failed is not None:
            self._fetch_failed(self, error)


def use_consumer_class(broker: Any, make: Callable[..., AIOKafkaConsumer]) -> None:
    """Makes a connected FastStream KafkaBroker build its subscribers' consumers with `make` (e.g. FleetConsumer with
    its hooks), keeping every option FastStream put together (bootstrap servers, security, client id, ...).

    Why a reach: FastStream 0.7 has no option for the consumer class. `KafkaBrokerConfig.connect()` sets
    `builder = partial(aiokafka.AIOKafkaConsumer, **options)` and each subscriber's `start()` calls that builder. So
    after the broker connects, the partial's function is swapped and its keywords kept.
    """
    config = broker.config.broker_config
    built: functools.partial = config.builder
    if built.func is not AIOKafkaConsumer:
        raise RuntimeError(
            f"FastStream builds its consumers with {built.func!r}, not aiokafka's: see fleet.runtime.adapters"
        )
    config.builder = functools.partial(make, *built.args, **built.keywords)


def fetched_position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The next offset the consumer will fetch on `tp`, or None while it has none (just assigned, offsets being fetched,
    or revoked meanwhile).

    Why a reach: aiokafka's public `position(tp)` is a coroutine that waits until the partition has a position, and a
    health probe or a metrics scrape must not wait; its `highwater(tp)` reads the same partition state, without waiting.
    """
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
    except (AssertionError, AttributeError, KeyError):
        return None
    if state is None or not state.has_valid_position:
        return None
    return int(state.position)
