"""What the operators' commands on fleet.control.v1 say about one service: pure, folded record by record."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from contracts import ControlIssued, Registry, UnknownTopic

__all__ = ["ALL_TOPICS", "Held", "Seek", "fold", "held_topic"]

ALL_TOPICS = "*"  # a pause or resume that names no topic: every topic the service reads


@dataclass(frozen=True)
class Seek:
    """A seek to apply: move `group` to `offsets` ((topic, partition) → next offset)."""

    command_id: str
    group: str
    offsets: dict[tuple[str, int], int]


@dataclass(frozen=True)
class Held:
    """One service's standing orders: which of its topics are paused (ALL_TOPICS: all), by whom and why, and the ids
    of the commands already folded (a copy of a record, re-appended, changes nothing)."""

    service: str
    group: str | None = None  # the service's consumer group, once known: a command for another group is not its own
    paused: frozenset[str] = frozenset()
    paused_by: str = ""
    paused_at: datetime | None = None
    reason: str = ""
    seen: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def is_paused(self) -> bool:
        return bool(self.paused)

    @property
    def what(self) -> str:
        """What is paused, in words: `every topic`, or the topics' names."""
        return "every topic" if ALL_TOPICS in self.paused else ", ".join(sorted(self.paused))

    def pauses(self, topic: str) -> bool:
        """Whether records of `topic` (a registry topic's name, as `held_topic` gives it) are held."""
        return ALL_TOPICS in self.paused or topic in self.paused


def held_topic(name: str, registry: Registry) -> str:
    """The registry topic a consumer's topic stands for: a retry tier is held with its topic."""
    try:
        return registry.resolve(name).name
    except UnknownTopic:
        return name


def fold(held: Held, command_id: str, event: ControlIssued) -> tuple[Held, Seek | None]:
    """The standing orders after one command, and the seek it asks for (None if none). Commands for another service
    or another of its consumer groups, and commands already folded, change nothing."""
    if event.service != held.service or command_id in held.seen:
        return held, None
    if event.command != "seek" and event.group and held.group and event.group != held.group:
        return held, None
    seen = held.seen | {command_id}
    if event.command == "pause":
        topics = frozenset(event.topics) or frozenset({ALL_TOPICS})
        return (
            replace(
                held,
                paused=held.paused | topics,
                paused_by=event.issued_by,
                paused_at=event.issued_at,
                reason=event.reason,
                seen=seen,
            ),
            None,
        )
    if event.command == "resume":
        # A resume of named topics lifts those; one that names none lifts everything.
        paused = held.paused - frozenset(event.topics) if event.topics else frozenset()
        if not paused:
            return Held(held.service, held.group, seen=seen), None
        return replace(held, paused=paused, seen=seen), None
    offsets = {(o.topic, o.partition): o.offset for o in event.offsets}
    return replace(held, seen=seen), Seek(command_id, event.group or "", offsets)
