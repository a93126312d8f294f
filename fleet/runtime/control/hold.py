"""A worker's side of fleet.control.v1: it reads every command for its service and holds, resumes or moves its
consumers between two batches, without leaving its group."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any

import structlog
from aiokafka import TopicPartition

from contracts import (
    REGISTRY,
    ControlIssued,
    Envelope,
    Keyring,
    Registry,
    Rejected,
    UnknownTopic,
    decode_keyed_value,
    verify_record,
)

from ..delivery.batches import batch_subscriber_options
from ..delivery.dead_letters import Rejection
from .state import Held, Seek, fold, held_topic

__all__ = ["CONTROL_TOPIC", "Hold", "attach_control", "verified_command"]

CONTROL_TOPIC = REGISTRY.of(ControlIssued).name
log = structlog.get_logger("fleet.control")


class Hold:
    """One worker's standing orders, shared by its consumers: read by each before it fetches (FleetConsumer.getmany),
    written by the control subscriber."""

    def __init__(self, service: str, registry: Registry = REGISTRY, *, catch_up_s: float = 30.0) -> None:
        self.held = Held(service)
        self.registry = registry
        self.catch_up_s = catch_up_s
        # Set once the control topic's history has been read to its end: before that, the service's consumers wait,
        # so a replica that starts while its service is paused starts paused.
        self.caught_up = asyncio.Event()
        self._gave_up_waiting = False
        self._changed = asyncio.Event()
        self._seeks: list[Seek] = []

    def belongs_to(self, group: str) -> None:
        """The worker's consumer group, told by its first subscriber before it starts: a pause or resume for another
        group of the same service (another deployment, a test's own group) is not for this worker."""
        if self.held.group is None:
            self.held = replace(self.held, group=group)

    @property
    def live(self) -> bool:
        return self.caught_up.is_set()

    def pauses(self, topic: str) -> bool:
        return self.held.pauses(held_topic(topic, self.registry))

    def apply(self, command_id: str, event: ControlIssued) -> bool:
        """Folds one verified command; True if it concerned this service and was new. A seek read in the history is
        not applied again: it was applied, or `fleet replay` committed the offsets itself, when it was issued."""
        held, seek = fold(self.held, command_id, event)
        if held is self.held:
            return False
        self.held = held
        if seek is not None and self.live:
            self._seeks.append(seek)
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    def seeks_for(self, group: str | None, assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
        """The offsets a consumer of `group` must move to now, on the partitions it holds; taken once."""
        moves: dict[TopicPartition, int] = {}
        for seek in [s for s in self._seeks if s.group == group]:
            self._seeks.remove(seek)
            moves |= {
                tp: seek.offsets[(tp.topic, tp.partition)]
                for tp in assigned
                if (tp.topic, tp.partition) in seek.offsets
            }
        return moves

    async def wait_caught_up(self) -> None:
        """Waits until the control topic's history is read, at most `catch_up_s` once per worker (a missing control
        topic must not stop a worker for good: it says so and goes on)."""
        if self.live or self._gave_up_waiting:
            return
        try:
            await asyncio.wait_for(self.caught_up.wait(), self.catch_up_s)
        except TimeoutError:
            if not self._gave_up_waiting:
                self._gave_up_waiting = True
                log.warning("control_not_read", topic=CONTROL_TOPIC, waited_s=self.catch_up_s)

    async def wait_changed(self, timeout_s: float) -> None:
        """Waits until a command changes the standing orders, or `timeout_s`."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            return


def verified_command(record: Any, keyring: Keyring, registry: Registry = REGISTRY) -> tuple[Envelope, ControlIssued]:
    """A control record's envelope and command, checked as any record is (signature, a key that may sign the control
    topic, payload) but for freshness: the history is read on every start, and a copy re-appended later has the same
    `ce_id`, which the fold ignores. Raises `Rejected` with the reason."""
    envelope = verify_record(
        record.topic,
        record.key,
        record.value,
        record.headers or (),
        record.timestamp,
        keyring,
        registry=registry,
        window_s=math.inf,
    )
    event = decode_keyed_value(registry.named(CONTROL_TOPIC), record.key, record.value)
    assert isinstance(event, ControlIssued)  # the control topic's one model
    return envelope, event


def attach_control(broker: Any) -> None:
    """Subscribes the worker (a FleetBroker) to fleet.control.v1, without a consumer group: every replica reads every
    command, from the start of the topic. A record that is not a verified ControlIssued changes nothing; read live,
    it is dead-lettered with its reason (once per replica that reads it), read in the history on start, only logged."""
    hold: Hold = broker.hold
    try:
        topic = broker.registry.named(CONTROL_TOPIC)
    except UnknownTopic:  # a broker on a registry of its own (make bench's relay) has no operators' commands to read
        hold.caught_up.set()
        return
    group_label = f"{broker.service}.control"
    registry: Registry = broker.registry

    async def on_control_batch(records: Any) -> None:
        for record in records:
            try:
                envelope, event = verified_command(record, broker.keys.keyring(), registry)
            except Rejected as refused:
                if hold.live:
                    await broker.failures.dead_letter(Rejection.of(record, refused.reason, refused.detail), group_label)
                else:  # dead-lettered when it was read live, if any replica ran then; refused again, quietly
                    log.info(
                        "control_refused", offset=record.offset, reason=refused.reason, detail=refused.detail[:200]
                    )
                continue
            if hold.apply(envelope.id, event):
                log.info(
                    "control_applied",
                    command=event.command,
                    topics=list(event.topics) or "all",
                    issued_by=event.issued_by,
                    reason=event.reason,
                    offset=record.offset,
                    live=hold.live,
                )

    def on_control_issued(event: ControlIssued) -> None:
        """Obeys the operators' commands for this service: pause, resume, seek."""

    # What check_one_type_per_topic and the AsyncAPI document read: the one model of the topic.
    on_control_batch.per_event_handler = on_control_issued  # type: ignore[attr-defined]
    on_control_batch.__name__ = on_control_batch.__qualname__ = "on_control_issued"
    on_control_batch.__doc__ = on_control_issued.__doc__
    subscriber = broker.subscriber(
        CONTROL_TOPIC,
        # The subscribers' idle options too: with aiokafka's defaults this one consumer fetched twice a second and
        # woke five times a second, a third of an idle worker's CPU (docs/performance.md).
        **batch_subscriber_options(broker.kafka.fetch_max_wait_ms, 500),
        group_id=None,
        auto_offset_reset="earliest",
        title="on_control_issued",
        description=topic.description,
    )
    subscriber(on_control_batch)
