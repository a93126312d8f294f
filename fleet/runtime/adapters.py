"""The one place that reaches into FastStream's and aiokafka's internals; everything else uses their public hooks.

Each reach below says why no supported hook does the job. `tests/unit/test_adapters.py` fails loudly when an upgrade
of either library changes what is reached into, and pyproject.toml pins both versions.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

__all__ = [
    "BUSY_FETCH_WAIT_MS",
    "PINNED",
    "FleetConsumer",
    "fetched_position",
    "kafka_producer_of",
    "use_consumer_class",
]

# The versions whose internals this module was written against (and pyproject.toml pins).
PINNED = {"faststream": "0.7.8", "aiokafka": "0.14.0"}
# How long the broker may hold a fetch while the consumer is busy (its last poll brought records); idle, it is the
# consumer's fetch_max_wait_ms (FLEET_KAFKA_FETCH_MAX_WAIT_MS, 5 s). See FleetConsumer._fetch_wait_for.
BUSY_FETCH_WAIT_MS = 20
# A busy consumer that gets no record for this long is idle again: its fetches go back to the long hold, so a fleet at
# rest pays for a few short fetches after its last record, not for seconds of them.
BUSY_POLL_MS = 100


class FleetConsumer(AIOKafkaConsumer):
    """aiokafka's consumer, with two public methods overridden (a subclass, no patching):

    - `getone` and `getmany` tell the worker about a Kafka error before FastStream's consume loop sees it. That loop
      logs the error and tries again every 5 s, forever; a refusal (an ACL revoked while the worker runs) must instead
      be reported once and stop the worker.
    - `getmany` waits up to `idle_wait_ms` for a first record, however briefly FastStream asks it to. It returns as
      soon as one arrives, so this costs no latency; but FastStream's batch loop asks again (after a short sleep) each
      time a poll comes back empty, and with short polls an idle worker's consumers would wake many times a second.
      Once records came, it lingers `linger_ms` for more when it has fewer than asked for.
    - `getmany` shortens the broker's long-poll while records flow (`_fetch_wait_for`), so a backlog is never stuck
      behind a fetch of the idle partitions.
    - `getmany` obeys the operators' standing orders (`hold`, a fleet.runtime.control.Hold) before it fetches, that
      is between two batches: it pauses and resumes partitions with aiokafka's public `pause`/`resume` (the consumer
      stays in its group, keeps its partitions and heartbeats), moves a group asked to move (`seek`, then `commit`),
      and hands back no record of a held partition (it seeks back to it, so nothing is skipped). The consumer of
      `control_topic` itself tells the hold when it has read the topic's history to its end.
    """

    def __init__(
        self,
        *topics: str,
        fetch_failed: Callable[[FleetConsumer, KafkaError], None] | None = None,
        idle_wait_ms: int = 0,
        linger_ms: int = 0,
        hold: Any = None,
        control_topic: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(*topics, **options)
        self.group = options.get("group_id")
        self._fetch_failed = fetch_failed
        self._idle_wait_ms = idle_wait_ms
        self._linger_ms = linger_ms
        self._hold = hold
        self._control_topic = control_topic
        self._control_ends: dict[TopicPartition, int] | None = None
        self._idle_fetch_wait_ms = options.get("fetch_max_wait_ms", 500)  # aiokafka's default when not given
        self._busy = False  # its last poll brought records: the broker holds its fetches BUSY_FETCH_WAIT_MS

    async def getone(self, *partitions: TopicPartition) -> Any:
        try:
            return await super().getone(*partitions)
        except KafkaError as error:
            self._report(error)
            raise

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        try:
            wait_ms = max(timeout_ms, self._idle_wait_ms)
            if self._hold is not None:
                if self._reads_control():
                    await self._note_control_read()
                else:
                    await self._hold.wait_caught_up()
                    await self._apply_seeks()
                    if self._sync_pauses():  # every partition it holds is paused: wait for orders, then poll once
                        await self._hold.wait_changed(wait_ms / 1000)
                        return self._without_held(
                            await super().getmany(*partitions, timeout_ms=0, max_records=max_records)
                        )
            found = await self._first_records(partitions, wait_ms, max_records)
            if found and self._linger_ms and (max_records is None or _count(found) < max_records):
                # A few records came: wait a moment for more, so a steady trickle is handled in batches too (each
                # batch costs a transaction, a sync to disk and an offset commit, whatever its size).
                await asyncio.sleep(self._linger_ms / 1000)
                left = None if max_records is None else max_records - _count(found)
                for tp, more in (await super().getmany(*partitions, timeout_ms=0, max_records=left)).items():
                    found.setdefault(tp, []).extend(more)
            return self._without_held(found)
        except KafkaError as error:
            self._report(error)
            raise

    async def _first_records(
        self, partitions: tuple[TopicPartition, ...], wait_ms: int, max_records: int | None
    ) -> dict:
        """Waits up to `wait_ms` for records. A busy consumer (its last poll brought records) waits BUSY_POLL_MS with
        the broker's short hold first; if none came it is idle, and waits the rest with the long one."""
        if self._busy:
            found = await super().getmany(*partitions, timeout_ms=min(wait_ms, BUSY_POLL_MS), max_records=max_records)
            if found:
                return found
            self._fetch_wait_for(busy=False)
        found = await super().getmany(*partitions, timeout_ms=wait_ms, max_records=max_records)
        if found:
            self._fetch_wait_for(busy=True)
        return found

    def _fetch_wait_for(self, *, busy: bool) -> None:
        """How long the broker may hold this consumer's next fetches: short while records flow, long once idle.

        aiokafka sends one fetch per broker at a time, and while some partitions still have records it has not handed
        over it fetches only the others after `prefetch_backoff` (0.1 s). When those are idle (an older topic version,
        a quiet topic), that fetch is a long-poll the broker holds for fetch_max_wait_ms, and the partitions with a
        backlog cannot be fetched again until it returns: one payments replica draining 10,000 orders stalled 2.1 s
        in 21 polls behind orders.placed.v1's empty partitions (1,671 orders/s; 2,356 with this, docs/performance.md).

        Why a reach: aiokafka takes fetch_max_wait_ms only in its constructor; its fetcher reads `_fetch_max_wait_ms`
        each time it builds a fetch request, so setting it applies from the next fetch on."""
        self._busy = busy
        fetcher = getattr(self, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = (
                min(BUSY_FETCH_WAIT_MS, self._idle_fetch_wait_ms) if busy else self._idle_fetch_wait_ms
            )

    # ---- the operators' standing orders (fleet.runtime.control) ---------------------------------------------------

    def _reads_control(self) -> bool:
        return self.group is None and self.subscription() == {self._control_topic}

    async def _note_control_read(self) -> None:
        """Called before each poll of the control consumer, so after the previous batch was folded: once its position
        reaches the end offsets it saw first, the history is read."""
        if self._hold.live:
            return
        assigned = self.assignment()
        if not assigned:
            return
        if self._control_ends is None:
            self._control_ends = await self.end_offsets(list(assigned))
        for tp, end in self._control_ends.items():
            if await self.position(tp) < end:
                return
        self._hold.caught_up.set()

    async def _apply_seeks(self) -> None:
        moves = self._hold.seeks_for(self.group, self.assignment())
        if not moves:
            return
        for tp, offset in moves.items():
            self.seek(tp, offset)
        await self.commit(moves)  # the group's new position survives this replica: another one resumes from it

    def _sync_pauses(self) -> bool:
        """Pauses the held partitions and resumes the others; True when it holds partitions and all are paused."""
        assigned = self.assignment()
        paused = self.paused()
        held = {tp for tp in assigned if self._hold.pauses(tp.topic)}
        if held - paused:
            self.pause(*(held - paused))
        if (assigned - held) & paused:
            self.resume(*((assigned - held) & paused))
        return bool(assigned) and held == assigned

    def _without_held(self, found: dict) -> dict:
        """No record of a held partition is handed over: its position goes back to the first one, to fetch on resume."""
        if self._hold is None or self._reads_control():
            return found
        for tp in [tp for tp in found if self._hold.pauses(tp.topic)]:
            self.seek(tp, found.pop(tp)[0].offset)
            self.pause(tp)
        return found

    def _report(self, error: KafkaError) -> None:
        if self._fetch_failed is not None:
            self._fetch_failed(self, error)


def _count(found: dict) -> int:
    return sum(len(records) for records in found.values())


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


def kafka_producer_of(broker: Any) -> AIOKafkaProducer | None:
    """The aiokafka producer a connected FastStream KafkaBroker publishes with, or None (not connected yet, or
    FastStream's in-memory test broker).

    Why a reach: a worker sends what its handlers emit straight to this producer, skipping FastStream's publish path,
    which cost more per event than the send itself (docs/performance.md); FastStream 0.7 exposes the producer only as
    `config.broker_config.producer._producer.producer`. Using it, and not a second producer of our own, keeps one
    client (and one metadata refresh) per worker.
    """
    try:
        producer = broker.config.broker_config.producer._producer.producer
    except Exception:  # FastStream's stand-ins raise their own IncorrectState, not AttributeError, before connecting
        return None
    return producer if isinstance(producer, AIOKafkaProducer) else None
