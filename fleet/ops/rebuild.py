"""`fleet rebuild`: a service's read model built again from the start of its topics while the live one serves, then
swapped in.

1. A fresh store beside the live one, with the service's migrations (fleet.ops.rebuild_stores).
2. Every record of the topics the service reads in its group, from the first one the broker keeps, verified as its
   replicas verify them (but for freshness: they were fresh when first accepted) and folded by the service's own fold,
   claimed under the service's own group: after the swap its inbox knows what the rebuild folded, so the service
   folds none of it twice. Refused records are skipped and counted.
3. Read to the topics' ends, the service is paused (its group, on every topic it reads, unless an operator paused it
   already), the rest read, and the model swapped in, in one transaction, once the rebuild has every event the live
   model has folded (the check is made under the swap's lock: no event folded by the live model is lost, whatever
   the service did meanwhile).
4. The service resumed; the fresh store deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contracts import REGISTRY, Keyring, PrivateKey, Registry, Rejected, as_current, verify
from contracts.connection import KafkaConnection, client_options
from fleet.catalog import Rebuildable, rebuildable
from fleet.ops.control import issue, standing_orders
from fleet.ops.reading import read_spans
from fleet.ops.rebuild_stores import FreshStore, Swap, fresh_store_beside
from fleet.ops.topics import partitions_of
from fleet.runtime.keys import KeyStore

__all__ = [
    "SWAP_ATTEMPTS",
    "RebuildIncomplete",
    "RebuildReport",
    "ServiceKeptMoving",
    "Tally",
    "definitely_missing",
    "rebuild_read_model",
]

# How often the swap is tried while the service still folds events the rebuild has not read (it obeys the pause
# between two batches), and how long to let it finish between two tries.
SWAP_ATTEMPTS = 60
BETWEEN_ATTEMPTS_S = 0.5
PROGRESS_EVERY = 50_000  # records: a progress line on a long read


class RebuildIncomplete(RuntimeError):
    """The rebuilt model lacks events the live one has folded, which are no longer on the topics (their retention
    passed) or are refused now: swapping would lose them, so nothing was swapped."""


class ServiceKeptMoving(RuntimeError):
    """The live model kept folding events the rebuild had not read yet, attempt after attempt: the service did not
    obey the pause."""


@dataclass
class Tally:
    """What the rebuild did with the records it read."""

    read: int = 0
    folded: int = 0
    repeats: int = 0  # a second copy of an event already folded (the same ce_id on the topics twice)
    refused: Counter[str] = field(default_factory=Counter)  # by reason (wire-format codes)

    def add(self, other: Tally) -> None:
        self.read += other.read
        self.folded += other.folded
        self.repeats += other.repeats
        self.refused.update(other.refused)

    def line(self) -> str:
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in self.refused.most_common())
        refused = f"{sum(self.refused.values()):,} refused" + (f" ({reasons})" if reasons else "")
        return f"{self.read:,} records read: {self.folded:,} folded, {self.repeats:,} repeats, {refused}"


@dataclass(frozen=True)
class RebuildReport:
    service: str
    group: str
    tally: Tally
    swap: Swap
    accepted_missing: int  # events of the live model left out with --accept-missing
    paused_here: tuple[str, ...]  # the topics this rebuild paused and resumed (none when an operator had paused all)
    took_s: float


def definitely_missing(missing: frozenset[str], missing_before: frozenset[str]) -> frozenset[str]:
    """The events the live model has and the rebuilt one will never have: missing at the last attempt too, although
    the rebuild has since read the topics to ends measured after that attempt saw them claimed (so their records,
    had they been on the topics and valid, were read and folded)."""
    return missing & missing_before


# ---- Reading the topics from the start ------------------------------------------------------------------------------


class TopicsFromTheStart:
    """A consumer without a group on every partition of the topics, from the first record the broker keeps; read to
    given ends, step by step."""

    def __init__(self, connection: str | KafkaConnection, topics: Iterable[str]) -> None:
        self.connection = connection
        self.topics = list(topics)
        self.consumer: Any = None
        self.next: dict[Any, int] = {}  # the next offset to read on each partition

    async def __aenter__(self) -> TopicsFromTheStart:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        counts = await partitions_of(self.connection, self.topics)
        partitions = [TopicPartition(topic, p) for topic in self.topics for p in range(counts.get(topic, 0))]
        consumer = AIOKafkaConsumer(
            **client_options(self.connection), enable_auto_commit=False, client_id="fleet-rebuild"
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            self.next = dict(await consumer.beginning_offsets(partitions)) if partitions else {}
        except BaseException:
            await consumer.stop()
            raise
        self.consumer = consumer
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.consumer.stop()

    async def ends(self) -> dict[Any, int]:
        """Where each partition ends now."""
        return dict(await self.consumer.end_offsets(list(self.next))) if self.next else {}

    async def read_to(self, ends: dict[Any, int]) -> AsyncIterator[list[Any]]:
        """Batches of the records from where the last read stopped up to `ends`."""
        # From our own next offsets, not the consumer's positions: a fetch may have gone past the last ends.
        spans = {tp: (self.next[tp], end) for tp, end in ends.items() if end > self.next[tp]}
        self.consumer.resume(*self.next)  # read_spans pauses what it finished; this read may need them again
        async for records in read_spans(self.consumer, spans):
            yield records
        self.next |= {tp: end for tp, (_start, end) in spans.items()}


# ---- Folding into the fresh store -----------------------------------------------------------------------------------


class Folder:
    """Verifies records as the service's replicas do and folds them into the fresh store, a batch per transaction."""

    def __init__(self, fresh: FreshStore, target: Rebuildable, keyring: Keyring, registry: Registry) -> None:
        self.fresh = fresh
        self.target = target
        self.keyring = keyring
        self.registry = registry
        self.tally = Tally()

    async def read_to(self, topics: TopicsFromTheStart, ends: dict[Any, int], say: Callable[[str], Any]) -> None:
        next_line = self.tally.read + PROGRESS_EVERY
        async for records in topics.read_to(ends):
            self.tally.add(await self._fold_batch(records))
            if self.tally.read >= next_line:
                say(f"  {self.tally.line()}")
                next_line = self.tally.read + PROGRESS_EVERY

    async def _fold_batch(self, records: list[Any]) -> Tally:
        for attempt in range(3):
            try:
                return await self._fold_in_one_transaction(records)
            except Exception as error:
                # PostgreSQL: the fold locks each order (an advisory lock), and so does the live service, in the same
                # database; two batches that lock two orders in opposite orders deadlock, and one is rolled back.
                if getattr(error, "sqlstate", None) not in ("40P01", "40001") or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fold_in_one_transaction(self, records: list[Any]) -> Tally:
        tally = Tally(read=len(records))
        async with self.fresh.store.batch() as tx:
            for record in records:
                try:
                    envelope, event = verify(
                        record.topic,
                        record.key,
                        record.value,
                        record.headers or (),
                        record.timestamp,
                        self.keyring,
                        registry=self.registry,
                        window_s=math.inf,  # fresh when first accepted: a rebuild reads history
                    )
                except Rejected as refused:
                    tally.refused[refused.reason] += 1
                    continue
                # An older version of an event is folded as the service's handler gets it: upcast to the newest.
                event = as_current(event, self.registry)
                if await self.target.model.fold(tx, self.target.group, event, envelope) is None:
                    tally.repeats += 1
                else:
                    tally.folded += 1
        return tally


# ---- The service paused around the swap -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def paused_for_the_swap(
    connection: str | KafkaConnection,
    signer: PrivateKey,
    keyring: Keyring,
    target: Rebuildable,
    topics: list[str],
    say: Callable[[str], Any],
) -> AsyncIterator[tuple[str, ...]]:
    """The service's group paused on every topic it reads that is not paused already, resumed on those same topics
    when the block ends, however it ends (an operator's own pause stands); yields the topics this paused."""
    standing = (await standing_orders(connection, keyring, [target.service], groups={target.service: target.group}))[
        target.service
    ]
    to_pause = tuple(topic for topic in topics if not standing.pauses(topic))
    why = (
        "fleet rebuild: swapping in the rebuilt read model (if this stays, the rebuild died: "
        f"`fleet resume {target.service} --group {target.group}`)"
    )
    which = f"{target.service} (group {target.group})"
    if to_pause:
        await issue(connection, signer, target.service, "pause", topics=to_pause, group=target.group, reason=why)
        say(f"paused {which} on {len(to_pause)} topics for the swap")
    else:
        say(f"{which} is paused already: it stays paused")
    try:
        yield to_pause
    finally:
        if to_pause:
            await issue(
                connection,
                signer,
                target.service,
                "resume",
                topics=to_pause,
                group=target.group,
                reason="fleet rebuild: done",
            )
            say(f"resumed {which}")


async def swap_when_caught_up(
    fresh: FreshStore,
    folder: Folder,
    topics: TopicsFromTheStart,
    *,
    accept_missing: bool,
    say: Callable[[str], Any],
) -> tuple[Swap, int]:
    """Tries the swap; while the live model has events the rebuild lacks, reads on to the topics' new ends and tries
    again. Returns the swap and how many events of the live model were left out (only with `accept_missing`)."""
    group = folder.target.group
    accepted: frozenset[str] = frozenset()
    missing_before: frozenset[str] = frozenset()
    for _attempt in range(SWAP_ATTEMPTS):
        swap = await fresh.swap(group, accepted)
        if swap.swapped:
            return swap, len(accepted)
        lost = definitely_missing(swap.missing, missing_before)
        if lost and not accept_missing:
            raise RebuildIncomplete(
                f"not swapped: {len(lost):,} of the events the live read model has folded (group {group}) are no "
                "longer on the topics (past their retention) or are refused now, and swapping would lose them; the "
                "live model keeps serving (--accept-missing swaps anyway, without them)"
            )
        if lost:
            say(f"--accept-missing: leaving out {len(lost):,} of the live model's events, no longer on the topics")
        accepted |= lost
        missing_before = swap.missing - lost
        if missing_before:
            await asyncio.sleep(BETWEEN_ATTEMPTS_S)  # the service finishes the batch in hand, then obeys the pause
        await folder.read_to(topics, await topics.ends(), say)
    raise ServiceKeptMoving(
        f"not swapped: {folder.target.service} (group {group}) kept folding events the rebuild had not read, "
        f"{SWAP_ATTEMPTS} times; is it obeying fleet.control.v1? The live model keeps serving"
    )


# ---- The whole rebuild ----------------------------------------------------------------------------------------------


async def rebuild_read_model(
    connection: str | KafkaConnection,
    service: str,
    keys: KeyStore,
    *,
    accept_missing: bool = False,
    say: Callable[[str], Any] = lambda line: None,
    registry: Registry = REGISTRY,
) -> RebuildReport:
    """Builds the service's read model again from its topics beside the live one and swaps it in (module docstring).
    `keys` is the operators' key store: its keyring verifies the records, its key signs the pause and the resume."""
    target = rebuildable(service)  # refuses a service whose state is not a read model, before anything else
    keyring, signer = keys.keyring(), keys.signer()  # no keyring or operator key: SigningKeyError, before the broker
    names = [topic.name for topic in registry.consumed_in_group_by(service)]
    started = time.monotonic()
    async with (
        fresh_store_beside(target.store_url, target.model, now=datetime.now(UTC)) as fresh,
        TopicsFromTheStart(connection, names) as topics,
    ):
        say(f"rebuilding {service}'s read model (group {target.group}) in {fresh.where}, from {len(names)} topics")
        folder = Folder(fresh, target, keyring, registry)
        await folder.read_to(topics, await topics.ends(), say)
        say(f"read to the topics' ends: {folder.tally.line()}")
        async with paused_for_the_swap(connection, signer, keyring, target, names, say) as paused:
            swap, accepted = await swap_when_caught_up(fresh, folder, topics, accept_missing=accept_missing, say=say)
            say(
                f"swapped in one transaction ({swap.locked_s * 1000:.0f} ms locked): {swap.rows:,} rows of "
                f"{', '.join(target.model.tables)} and {swap.claims:,} inbox claims; {folder.tally.line()}"
            )
    took = time.monotonic() - started
    say(f"rebuilt in {took:.1f} s; {fresh.where} deleted: its content is in the live store now")
    return RebuildReport(service, target.group, folder.tally, swap, accepted, paused, took)
