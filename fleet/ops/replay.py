"""`fleet replay`: move a service's consumer group back to the first record at or after a moment, so its replicas read
again what came since.

A pure planner decides, from what the broker says (committed, first and end offsets, Kafka's offsets-for-times,
retention), where each partition goes, or refuses; the shell below gathers those facts and carries a plan out: pause,
move (a seek the live replicas apply, or a commit when none runs), resume."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts import REGISTRY, Keyring, PartitionOffset, PrivateKey, Registry
from contracts.connection import KafkaConnection, client_options

__all__ = [
    "Move",
    "PartitionFacts",
    "ReplayNotApplied",
    "ReplayPlan",
    "ReplayRefused",
    "TopicsMissing",
    "carry_out",
    "gather_facts",
    "plan_replay",
]

KEPT_FOR_GOOD = -1  # retention.ms of a topic whose records are never deleted for their age


class ReplayRefused(ValueError):
    """The moment cannot be replayed from: it is in the future, or records appended since may be gone."""


class ReplayNotApplied(RuntimeError):
    """The service's replicas did not take the new offsets in time; the service was left paused."""


class TopicsMissing(LookupError):
    """A topic to replay does not exist on the broker."""


# ---- The functional core: facts in, a plan (or a refusal) out --------------------------------------------------------


@dataclass(frozen=True)
class PartitionFacts:
    """What the broker says about one partition of a topic the service reads, and about its group there."""

    topic: str
    partition: int
    committed: int | None  # the group's next offset to read; None: the group never committed here
    beginning: int  # the first offset the partition still holds (above 0: records were deleted)
    end: int  # the offset of the next record appended
    first_since: int | None  # offsets-for-times: the first offset appended at or after the moment; None: none yet
    oldest_ms: int | None  # when the first record still held was appended; None: the partition holds nothing


@dataclass(frozen=True)
class Move:
    """Where one partition's group goes: from `current` to `target`; it moves only back (target < current)."""

    topic: str
    partition: int
    current: int
    target: int
    never_committed: bool = False

    @property
    def moves(self) -> bool:
        return not self.never_committed and self.target < self.current

    @property
    def read_again(self) -> int:
        """How many offsets lie between the new position and the old: the records read again (a topic without
        transactions has a record at every offset)."""
        return self.current - self.target if self.moves else 0

    @property
    def name(self) -> str:
        return f"{self.topic}[{self.partition}]"

    def __str__(self) -> str:
        if self.never_committed:
            return f"{self.name}: stays at {self.current}, its first offset (never committed: the group reads it all)"
        if self.moves:
            return f"{self.name}: {self.current} → {self.target} ({_records(self.read_again)} to read again)"
        if self.target > self.current:
            # Moving forward would skip records the group has not handled yet: a replay never does that.
            return (
                f"{self.name}: stays at {self.current} (it has not reached the moment yet; "
                f"moving to {self.target} would skip {_records(self.target - self.current)} not handled yet)"
            )
        return f"{self.name}: stays at {self.current} (nothing handled since the moment)"


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay of `service` (its group `group`) from `since` does on each partition of `topics`."""

    service: str
    group: str
    since: datetime
    topics: tuple[str, ...]
    moves: tuple[Move, ...]

    @property
    def to_move(self) -> tuple[Move, ...]:
        return tuple(m for m in self.moves if m.moves)

    @property
    def read_again(self) -> int:
        return sum(m.read_again for m in self.moves)

    def offsets(self) -> tuple[PartitionOffset, ...]:
        """The new positions, as a seek command carries them."""
        return tuple(PartitionOffset(topic=m.topic, partition=m.partition, offset=m.target) for m in self.to_move)

    def targets(self) -> dict[tuple[str, int], int]:
        return {(m.topic, m.partition): m.target for m in self.to_move}

    def lines(self) -> list[str]:
        """One line per partition, then the total."""
        total = (
            f"{_records(self.read_again)} to read again on {len(self.to_move)} of {len(self.moves)} partitions "
            f"(group {self.group}, from {_moment(self.since)})"
        )
        return [*(str(m) for m in self.moves), total]


def plan_replay(
    service: str,
    group: str,
    topics: Iterable[str],
    facts: Iterable[PartitionFacts],
    retention_ms: Mapping[str, int],
    *,
    since: datetime,
    now: datetime,
) -> ReplayPlan:
    """Where each partition of `topics` goes so that `group` reads again every record appended at or after `since`.

    Refused (ReplayRefused) when `since` is after `now`, when it is older than a topic's retention (the broker has
    deleted what was appended before now - retention.ms, or may have), and when a partition has lost records
    (its first offset is above 0) and the oldest it still holds is younger than `since`: what lay between is gone.
    A partition with no record since `since` goes to its end; one the group never committed stays (a new group reads
    from the first offset anyway); a group is never moved forward, past records it has not handled yet."""
    if since > now:
        raise ReplayRefused(f"--since {_moment(since)} is in the future (it is {_moment(now)}): nothing to read again")
    topics = tuple(topics)
    for topic in topics:
        _refuse_beyond_retention(topic, retention_ms.get(topic, KEPT_FOR_GOOD), since, now)
    moves = []
    for fact in sorted(facts, key=lambda f: (topics.index(f.topic), f.partition)):
        _refuse_lost_records(fact, since)
        moves.append(_move(fact))
    return ReplayPlan(service, group, since, topics, tuple(moves))


def _refuse_beyond_retention(topic: str, retention_ms: int, since: datetime, now: datetime) -> None:
    if retention_ms == KEPT_FOR_GOOD:
        return
    kept_since = now - timedelta(milliseconds=retention_ms)
    if since < kept_since:
        raise ReplayRefused(
            f"--since {_moment(since)} is older than {topic}'s retention ({_duration(retention_ms)}): the broker may "
            f"have deleted what was appended before {_moment(kept_since)}; replay from then or later"
        )


def _refuse_lost_records(fact: PartitionFacts, since: datetime) -> None:
    # Records were deleted (retention by size, delete-records) and what is left begins after `since`: some of what
    # was appended since may be among the deleted, and a replay would silently miss it.
    if fact.beginning > 0 and fact.oldest_ms is not None and fact.oldest_ms > _ms(since):
        oldest = datetime.fromtimestamp(fact.oldest_ms / 1000, UTC)
        raise ReplayRefused(
            f"--since {_moment(since)} is older than what "
            f"{fact.topic}[{fact.partition}] still holds (the topic's retention): its first {fact.beginning} records "
            f"are deleted and the oldest left was appended at {_moment(oldest)}; replay from then or later"
        )


def _move(fact: PartitionFacts) -> Move:
    target = fact.end if fact.first_since is None else fact.first_since
    if fact.committed is None:
        return Move(fact.topic, fact.partition, fact.beginning, target, never_committed=True)
    return Move(fact.topic, fact.partition, fact.committed, target)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _moment(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _records(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms} ms"


# ---- The shell: the broker's facts, and carrying a plan out -----------------------------------------------------


async def gather_facts(
    connection: str | KafkaConnection, group: str, topics: Iterable[str], since: datetime
) -> tuple[list[PartitionFacts], dict[str, int]]:
    """Every partition's facts for `group` on `topics`, and each topic's retention.ms as the broker applies it."""
    from aiokafka import TopicPartition

    from fleet.ops.groups import admin_and_reader, committed_offsets

    topics = list(topics)
    async with admin_and_reader(connection, "fleet-replay") as (admin, consumer):
        counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics) if t["partitions"]}
        if missing := [t for t in topics if t not in counts]:
            raise TopicsMissing(f"{', '.join(missing)} not on the broker: run `fleet topics apply`")
        tps = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
        consumer.assign(tps)  # first: the offset look-ups need the partitions' metadata
        beginnings = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        found = await consumer.offsets_for_times({tp: _ms(since) for tp in tps})
        oldest = await consumer.offsets_for_times({tp: 0 for tp in tps})  # the first record held, and its time
        committed = await committed_offsets(admin, group)
        facts = [
            PartitionFacts(
                tp.topic,
                tp.partition,
                committed.get((tp.topic, tp.partition)),
                beginnings[tp],
                ends[tp],
                found[tp].offset if found.get(tp) is not None else None,
                oldest[tp].timestamp if oldest.get(tp) is not None else None,
            )
            for tp in tps
        ]
        return facts, await _retention_ms(admin, topics)


async def _retention_ms(admin, topics: list[str]) -> dict[str, int]:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    retention: dict[str, int] = {}
    for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]):
        for _code, _message, _type, name, entries in response.resources:
            retention[name] = int({entry[0]: entry[1] for entry in entries}.get("retention.ms", KEPT_FOR_GOOD))
    return retention


async def carry_out(
    connection: str | KafkaConnection,
    signer: PrivateKey,
    keyring: Keyring,
    plan: ReplayPlan,
    *,
    say: Callable[[str], None],
    timeout_s: float = 60.0,
    registry: Registry = REGISTRY,
) -> None:
    """Moves the group as `plan` says, the service paused around the move: the topics not paused yet are paused, the
    group is moved (no replica runs: the new offsets are committed here; else a seek command that each replica applies
    to the partitions it holds, and this waits until the group has committed them all), and what was paused here is
    resumed. Raises ReplayNotApplied, leaving the service paused, when the replicas have not moved in `timeout_s`."""
    from fleet.ops.control import issue, standing_orders
    from fleet.ops.groups import describe_groups

    reason = f"replay since {_moment(plan.since)}"

    async def command(name: str, **what: Any) -> str:
        sent = await issue(
            connection, signer, plan.service, name, group=plan.group, reason=reason, registry=registry, **what
        )
        return sent.id

    orders = await standing_orders(connection, keyring, [plan.service], registry, groups={plan.service: plan.group})
    to_pause = [t for t in plan.topics if not orders[plan.service].pauses(t)]  # what was paused before stays paused
    if to_pause:
        await command("pause", topics=to_pause)
        say(f"paused {plan.service} (group {plan.group}) on {', '.join(to_pause)} for the move")
    members = (await describe_groups(connection, [plan.group]))[plan.group].members
    if members:
        seek = await command("seek", topics=plan.topics, offsets=plan.offsets())
        await _wait_until_committed(connection, plan, timeout_s, seek)
        say(f"moved: the replicas of {plan.service} ({len(members)} in group {plan.group}) took the new offsets")
    else:
        await _commit(connection, plan.group, plan.targets())
        say(f"moved: no replica of {plan.service} runs in group {plan.group}; the new offsets are committed")
    if to_pause:
        await command("resume", topics=to_pause)
        say(f"resumed {plan.service} on {', '.join(to_pause)}: it reads from the new offsets")
    if left := [t for t in plan.topics if t not in to_pause]:
        say(f"{', '.join(left)} stay paused, as before the replay: `{_resume(plan)}` lets them go")


async def _commit(connection: str | KafkaConnection, group: str, targets: Mapping[tuple[str, int], int]) -> None:
    """Commits `targets` for `group` as a consumer outside the group would (assign, commit): the broker accepts it only
    while the group has no members."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    consumer = AIOKafkaConsumer(
        **client_options(connection), group_id=group, enable_auto_commit=False, client_id="fleet-replay"
    )
    try:
        await consumer.start()
        tps = {TopicPartition(topic, partition): offset for (topic, partition), offset in targets.items()}
        consumer.assign(list(tps))
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in tps.items()})
    finally:
        await consumer.stop()


async def _wait_until_committed(
    connection: str | KafkaConnection, plan: ReplayPlan, timeout_s: float, command_id: str
) -> None:
    """Until the group's committed offsets are the plan's targets; ReplayNotApplied naming the partitions that did not
    move, once `timeout_s` has passed."""
    from aiokafka.admin import AIOKafkaAdminClient

    from fleet.ops.groups import committed_offsets

    targets = plan.targets()
    admin = AIOKafkaAdminClient(**client_options(connection), client_id="fleet-replay")
    try:
        await admin.start()
        deadline = time.monotonic() + timeout_s
        while True:
            committed = await committed_offsets(admin, plan.group)
            behind = {tp: committed.get(tp) for tp, target in targets.items() if committed.get(tp) != target}
            if not behind:
                return
            if time.monotonic() >= deadline:
                raise ReplayNotApplied(_not_applied(plan, behind, timeout_s, command_id))
            await asyncio.sleep(0.25)
    finally:
        await admin.close()


def _not_applied(plan: ReplayPlan, behind: Mapping[tuple[str, int], int | None], timeout_s: float, seek: str) -> str:
    where = ", ".join(
        f"{topic}[{partition}] at {offset} (not {plan.targets()[(topic, partition)]})"
        for (topic, partition), offset in sorted(behind.items())
    )
    return (
        f"the replicas of {plan.service} did not move in {timeout_s:g}s (seek {seek}): {where}; {plan.service} stays "
        f"paused (group {plan.group}): see `fleet status`, then `fleet replay` again or `{_resume(plan)}`"
    )


def _resume(plan: ReplayPlan) -> str:
    return f"fleet resume {plan.service} --group {plan.group}"
