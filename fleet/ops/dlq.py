"""Dead letters for operators: count them, inspect them, and replay them onto their original topic.

A replayed dead letter is re-signed by the replay key."""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import AsyncIterator, Callable, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from contracts import REGISTRY, Envelope, Keyring, PrivateKey, Record, Registry, Rejected, sign, verify
from contracts.connection import KafkaConnection, client_options
from contracts.envelope import ENVELOPE_HEADERS
from fleet.ops.reading import read_spans
from fleet.ops.topics import partitions_of
from fleet.runtime.delivery.dead_letters import REPLAY_GROUP, REPLAYED_FROM
from fleet.runtime.delivery.retries import ORIGINAL_KEYID, RETRY_HEADERS
from fleet.runtime.keys import KeyStore

__all__ = [
    "LEDGER_MAX_CHARS",
    "REPLAYED_FROM",
    "REPLAY_GROUP",
    "DeadLetter",
    "Progress",
    "Replay",
    "ReplayKeyError",
    "ReplayReport",
    "Skip",
    "count_by_reason",
    "count_dead_letters",
    "dead_letter_topic",
    "describe",
    "last_dead_letters",
    "plan_replay",
    "replay_dead_letters",
    "replay_key_problem",
    "text_of",
    "triage",
]

# Kafka keeps at most 4096 bytes of metadata per committed offset (offset.metadata.max.bytes): the ledger stays below.
LEDGER_MAX_CHARS = 3500
LEDGER_PREFIX = "moved:"
TEXT_LIMIT = 200

Select = Callable[["DeadLetter"], bool]


class ReplayKeyError(RuntimeError):
    """The replay key cannot sign for the topic: its records would all be dead-lettered again."""


# ---- Pure part: reading, describing and planning, testable without Kafka ------------------------------------------


def dead_letter_topic(name: str, registry: Registry = REGISTRY) -> str:
    """`orders.placed.v1` or `orders.placed.v1.dlq` → `orders.placed.v1.dlq` (anything else is an UnknownTopic)."""
    base = name.removesuffix(".dlq")
    return registry.named(base).dead_letter_topic


def text_of(raw: bytes | None, limit: int = TEXT_LIMIT) -> str | None:
    """Bytes as text for a person: truncated, or `<N bytes, not UTF-8>` when they are not text."""
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(raw)} bytes, not UTF-8>"
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic as read: where it sits, its raw key and value, its headers in order."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0

    @classmethod
    def of(cls, record) -> DeadLetter:
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            tuple(record.headers or ()),
            record.timestamp,
        )

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        """The first header of that name as text; a dead letter is shown even when its headers are broken."""
        raw = next((value for key, value in self.headers if key == name), None)
        return text_of(raw, limit=500)

    @property
    def reason(self) -> str:
        return self.header("dlq-reason") or "unknown"

    @property
    def group(self) -> str:
        return self.header("dlq-group") or "-"


def count_by_reason(letters: Iterable[DeadLetter]) -> Counter[tuple[str, str]]:
    """How many dead letters each (reason, consumer group) has."""
    return Counter((letter.reason, letter.group) for letter in letters)


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def describe(letter: DeadLetter) -> dict:
    """What `fleet dlq show` tells about a dead letter: where it is, why it was refused, whose event it carries.

    The signature is left out (it proves nothing to a reader), and so is every header not named here."""
    return {
        "dlq_topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "key": text_of(letter.key),
        "reason": letter.reason,
        "detail": letter.header("dlq-detail"),
        "original_topic": letter.header("dlq-original-topic"),
        "original_partition": _number(letter.header("dlq-original-partition")),
        "original_offset": _number(letter.header("dlq-original-offset")),
        "group": letter.header("dlq-group"),
        "service": letter.header("dlq-service"),
        "failed_at": letter.header("dlq-failed-at"),
        "ce_id": letter.header("ce_id"),
        "ce_keyid": letter.header("ce_keyid"),
        "value": text_of(letter.value),
    }


@dataclass(frozen=True)
class Replay:
    """A dead letter ready to go back.

    `record` is for its original topic, signed by the replay key; `extra` holds the dead letter's other headers."""

    letter: DeadLetter
    record: Record
    extra: tuple[tuple[str, bytes], ...]

    def raw_headers(self) -> list[tuple[str, bytes]]:
        return self.record.raw_headers() + list(self.extra)


@dataclass(frozen=True)
class Skip:
    """A dead letter that cannot go back, and why.

    `why` is a reason code (those of the wire format, or `wrong_topic`); `detail` says it in one line."""

    letter: DeadLetter
    why: str
    detail: str


def replay_key_problem(keyring: Keyring, signer: PrivateKey, topic: str, now: datetime) -> str | None:
    """Why consumers would refuse what this key signs on `topic`, or None when they would accept it."""
    trusted = keyring.get(signer.kid)
    if trusted is None:
        return f"the replay key {signer.kid} is not in the keyring; run `fleet keys init`"
    if not trusted.may_sign(topic):
        return f"the replay key {signer.kid} may not sign {topic}; run `fleet keys init` to bring its topics in line"
    if not trusted.valid_at(now):
        return f"the replay key {signer.kid} is not valid now"
    return None


def plan_replay(
    letter: DeadLetter, signer: PrivateKey, keyring: Keyring, now: datetime, registry: Registry = REGISTRY
) -> Replay | Skip:
    """The record that puts a dead letter back on its original topic, or why it cannot go back.

    It keeps the key, the value and the event's identity (ce_id, flow, cause, type, source, subject, schema), so
    consumers still de-duplicate by ce_id; it gets a fresh ce_time and the replay key's signature."""
    target = registry.resolve(letter.topic)
    original_topic = letter.header("dlq-original-topic")
    if original_topic != target.name:
        return Skip(
            letter,
            "wrong_topic",
            f"dlq-original-topic is {original_topic!r}; {letter.topic} holds dead letters of {target.name}",
        )
    try:
        envelope = _authentic_envelope(letter, registry, keyring)
    except Rejected as refused:
        return Skip(letter, refused.reason, refused.detail)
    fresh = replace(envelope, time=_utc_text(now))
    # The envelope's subject is the record key: verification refused a record without a UTF-8 key equal to it.
    record = sign(Record(target.name, envelope.subject, letter.value or b"", fresh), signer)
    return Replay(letter, record, tuple(_kept_headers(letter, envelope)))


def _authentic_envelope(letter: DeadLetter, registry: Registry, keyring: Keyring) -> Envelope:
    """The envelope, if the dead letter passes every check of the wire format today except freshness, which the
    replay renews.

    This is what keeps the replay key from laundering records: a dead-letter topic is not signed, so only a record a
    trusted key signed for this topic, with a valid event, is signed again. A record that failed on a retry topic was
    re-signed by its consumer for that retry topic, so those names are tried too."""
    topic = registry.resolve(letter.topic)
    refusals: list[Rejected] = []
    for name in (topic.name, *topic.retry_topics):
        try:
            envelope, _event = verify(
                name, letter.key, letter.value, letter.headers, 0, keyring, registry=registry, window_s=math.inf
            )
            return envelope
        except Rejected as refused:
            refusals.append(refused)
            if refused.reason not in ("key_not_allowed", "bad_signature"):
                break  # every other check reads the same on any of the topic's names
    raise refusals[0]  # the topic's own name is always tried, first: its refusal is the one to report


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _kept_headers(letter: DeadLetter, envelope: Envelope) -> list[tuple[str, bytes]]:
    """The dead letter's own headers minus the envelope (signed anew), the dlq-* and retry-* ones (a replay is a fresh
    first attempt: a kept `retry-attempt` would count it as already retried), and our replay headers, added again."""
    ours = (ORIGINAL_KEYID, REPLAYED_FROM)
    first_signer = next((v for k, v in letter.headers if k == ORIGINAL_KEYID), envelope.keyid.encode("utf-8"))
    kept = [
        (k, v)
        for k, v in letter.headers
        if k not in ENVELOPE_HEADERS and not k.startswith("dlq-") and k not in RETRY_HEADERS and k not in ours
    ]
    return [*kept, (ORIGINAL_KEYID, first_signer), (REPLAYED_FROM, letter.position.encode("utf-8"))]


@dataclass(frozen=True)
class Progress:
    """How far the replay of one dead-letter partition got, kept as the replay group's committed offset and metadata.

    Every dead letter below `mark` is settled: moved, or reported as not replayable. `moved` lists the ones at or
    above the mark that were moved already: they lie behind a dead letter a filter left for later, which holds the
    mark back."""

    mark: int
    moved: frozenset[int] = frozenset()
    blocked: bool = False  # this run left a dead letter at or above the mark: the mark stays before it

    @classmethod
    def from_commit(cls, offset: int, metadata: str) -> Progress:
        return cls(offset, frozenset(_decode_ledger(metadata)))

    @property
    def metadata(self) -> str:
        return _encode_ledger(self.moved)

    def settle(self, offset: int, *, moved: bool) -> Progress:
        if offset < self.mark:
            return self  # settled by an earlier run (a --from-beginning run reads it again): that stays so
        if not self.blocked:
            return replace(self, mark=offset + 1, moved=frozenset(o for o in self.moved if o > offset))
        return replace(self, moved=self.moved | {offset}) if moved else self

    def leave(self, offset: int) -> Progress:
        return self if offset < self.mark else replace(self, blocked=True)

    def read_to(self, end: int) -> Progress:
        """Everything up to `end` was read: unless something was left, the mark moves there."""
        if self.blocked or end <= self.mark:
            return self
        return replace(self, mark=end, moved=frozenset(o for o in self.moved if o >= end))

    def has_room_for(self, offset: int) -> bool:
        """Whether the ledger can note one more moved dead letter (only needed behind a left one)."""
        return not self.blocked or offset < self.mark or len(_encode_ledger(self.moved | {offset})) <= LEDGER_MAX_CHARS


def _encode_ledger(offsets: Iterable[int]) -> str:
    """`moved:12-15,18`: runs of offsets, so a ledger of contiguous moves stays short."""
    runs: list[list[int]] = []
    for offset in sorted(offsets):
        if runs and offset == runs[-1][1] + 1:
            runs[-1][1] = offset
        else:
            runs.append([offset, offset])
    return (LEDGER_PREFIX + ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)) if runs else ""


def _decode_ledger(metadata: str) -> set[int]:
    if not metadata.startswith(LEDGER_PREFIX) or metadata == LEDGER_PREFIX:
        return set()  # no ledger (or not ours): nothing above the mark was moved
    offsets: set[int] = set()
    for run in metadata.removeprefix(LEDGER_PREFIX).split(","):
        first, _, last = run.partition("-")
        offsets.update(range(int(first), int(last or first) + 1))
    return offsets


@dataclass
class ReplayReport:
    """What a replay moved (or, dry, would move), what it could not move and why, and how many it left for later."""

    dlq_topic: str
    topic: str
    dry_run: bool
    signer: str
    moved: list[Replay] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    left: Counter[str] = field(default_factory=Counter)  # why: `filtered`, or `ledger_full`
    already_moved: int = 0

    @property
    def moved_by_reason(self) -> Counter[str]:
        return Counter(replay.letter.reason for replay in self.moved)

    @property
    def event_ids(self) -> list[str]:
        return [replay.record.envelope.id for replay in self.moved]


def _wanted(reason: str | None, select: Select | None) -> Select:
    return lambda letter: (reason is None or letter.reason == reason) and (select is None or select(letter))


def triage(
    letter: DeadLetter,
    progress: Progress,
    wanted: Select,
    plan: Callable[[DeadLetter], Replay | Skip],
    report: ReplayReport,
    from_beginning: bool,
) -> Progress:
    """Decides one dead letter's fate in a replay, notes it in the report, and returns the partition's new progress."""
    if letter.offset in progress.moved and not from_beginning:
        report.already_moved += 1
        return progress.settle(letter.offset, moved=True)
    if not wanted(letter):
        report.left["filtered"] += 1
        return progress.leave(letter.offset)
    if not progress.has_room_for(letter.offset):
        report.left["ledger_full"] += 1
        return progress.leave(letter.offset)
    step = plan(letter)
    if isinstance(step, Skip):
        report.skipped.append(step)
        return progress.settle(letter.offset, moved=False)
    report.moved.append(step)
    return progress.settle(letter.offset, moved=True)


# ---- I/O part: reading dead-letter topics and replaying with aiokafka ----------------------------------------------


@asynccontextmanager
async def _consumer(bootstrap: str | KafkaConnection, group_id: str | None = None) -> AsyncIterator[AIOKafkaConsumer]:
    # No subscription, ever: partitions are assigned by hand, so reading never joins (or disturbs) a consumer group.
    consumer = AIOKafkaConsumer(
        **client_options(bootstrap), group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        await consumer.start()  # inside the try: a consumer that failed to start is closed too
        yield consumer
    finally:
        await consumer.stop()


@asynccontextmanager
async def _producer(bootstrap: str | KafkaConnection, dry_run: bool) -> AsyncIterator[AIOKafkaProducer | None]:
    if dry_run:
        yield None
        return
    producer = AIOKafkaProducer(
        **client_options(bootstrap), client_id="fleet-dlq-replay", acks="all", enable_idempotence=True
    )
    try:
        await producer.start()
        yield producer
    finally:
        await producer.stop()


async def _bounds(
    bootstrap: str | KafkaConnection, consumer: AIOKafkaConsumer, topic: str
) -> dict[TopicPartition, tuple[int, int]]:
    """Each partition's first and end offsets now: a read stops at these ends, whatever arrives later."""
    count = (await partitions_of(bootstrap, [topic])).get(topic, 0)
    partitions = [TopicPartition(topic, p) for p in range(count)]
    if not partitions:
        return {}
    firsts, ends = await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)
    return {tp: (firsts[tp], ends[tp]) for tp in partitions}


async def _read(
    consumer: AIOKafkaConsumer, spans: dict[TopicPartition, tuple[int, int]]
) -> AsyncIterator[list[DeadLetter]]:
    """Batches of dead letters from each partition's start up to its end; never waits for records beyond the ends."""
    # Every partition is assigned, even one with nothing to read, so progress can be committed for each of them.
    consumer.assign(list(spans))
    async for records in read_spans(consumer, spans):
        yield [DeadLetter.of(r) for r in records]


async def count_dead_letters(
    bootstrap: str | KafkaConnection, topics: Sequence[str], *, select: Select | None = None
) -> dict[str, Counter[tuple[str, str]] | None]:
    """Dead letters by (reason, group) for each dead-letter topic, read from the beginning to the ends of now; None
    for a topic the broker does not have."""
    counts: dict[str, Counter[tuple[str, str]] | None] = {}
    async with _consumer(bootstrap) as consumer:
        for topic in topics:
            bounds = await _bounds(bootstrap, consumer, topic)
            found: Counter[tuple[str, str]] = Counter()
            async for letters in _read(consumer, bounds):
                found += count_by_reason(filter(_wanted(None, select), letters))
            counts[topic] = found if bounds else None
    return counts


async def last_dead_letters(
    bootstrap: str | KafkaConnection,
    topic: str,
    *,
    limit: int = 20,
    reason: str | None = None,
    select: Select | None = None,
) -> list[DeadLetter]:
    """The last `limit` dead letters (with that reason), oldest first, by when the broker appended them."""
    wanted = _wanted(reason, select)
    filtering = reason is not None or select is not None
    async with _consumer(bootstrap) as consumer:
        bounds = await _bounds(bootstrap, consumer, topic)
        # Unfiltered, the last `limit` of each partition are enough; a filter may have to look at everything.
        spans = {tp: (first if filtering else max(first, end - limit), end) for tp, (first, end) in bounds.items()}
        tails: dict[int, deque[DeadLetter]] = {tp.partition: deque(maxlen=limit) for tp in bounds}
        async for letters in _read(consumer, spans):
            for letter in filter(wanted, letters):
                tails[letter.partition].append(letter)
    newest = sorted(
        (letter for tail in tails.values() for letter in tail), key=lambda x: (x.timestamp, x.partition, x.offset)
    )
    return newest[-limit:] if limit else []


async def _saved_progress(
    bootstrap: str | KafkaConnection, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, Progress]:
    if not partitions:
        return {}  # asked for no partitions, the broker would answer with all of the group's
    admin = AIOKafkaAdminClient(**client_options(bootstrap), client_id="fleet-dlq-replay")
    try:
        await admin.start()
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await admin.close()
    return {tp: Progress.from_commit(c.offset, c.metadata or "") for tp, c in committed.items() if c.offset >= 0}


async def _publish(producer: AIOKafkaProducer | None, replays: list[Replay]) -> None:
    """Sends a batch and waits until the broker has acknowledged every record (acks=all).

    The replay commits its progress only after this returns."""
    if producer is None or not replays:
        return
    sent = [
        await producer.send(
            r.record.topic, key=r.record.key.encode("utf-8"), value=r.record.value, headers=r.raw_headers()
        )
        for r in replays
    ]
    await asyncio.gather(*sent)


async def _commit(consumer: AIOKafkaConsumer, before: dict, after: dict, dry_run: bool) -> None:
    changed = {
        tp: OffsetAndMetadata(p.mark, p.metadata)
        for tp, p in after.items()
        if (p.mark, p.moved) != (before[tp].mark, before[tp].moved)
    }
    if changed and not dry_run:
        await consumer.commit(changed)


async def replay_dead_letters(
    bootstrap: str | KafkaConnection,
    topic: str,
    keys: KeyStore,
    *,
    reason: str | None = None,
    dry_run: bool = False,
    from_beginning: bool = False,
    group: str = REPLAY_GROUP,
    select: Select | None = None,
    registry: Registry = REGISTRY,
) -> ReplayReport:
    """Puts the dead letters of `topic` back on its original topic, re-signed by the replay key, from where the last
    replay stopped (or from the beginning); commits progress after each acknowledged batch.

    Dry: sends and commits nothing."""
    dlq = dead_letter_topic(topic, registry)
    target = registry.resolve(dlq).name
    signer, keyring = keys.signer(), keys.keyring()
    problem = replay_key_problem(keyring, signer, target, datetime.now(UTC))
    if problem:
        raise ReplayKeyError(problem)
    report = ReplayReport(dlq, target, dry_run, signer.kid)
    wanted = _wanted(reason, select)

    def plan(letter: DeadLetter) -> Replay | Skip:
        return plan_replay(letter, signer, keyring, datetime.now(UTC), registry)

    async with _consumer(bootstrap, group) as consumer, _producer(bootstrap, dry_run) as producer:
        bounds = await _bounds(bootstrap, consumer, dlq)
        saved = await _saved_progress(bootstrap, group, list(bounds))
        progress = {tp: saved.get(tp) or Progress(first) for tp, (first, _end) in bounds.items()}
        spans = {
            tp: (first if from_beginning else max(first, progress[tp].mark), end) for tp, (first, end) in bounds.items()
        }
        async for letters in _read(consumer, spans):
            before, moved_so_far = dict(progress), len(report.moved)
            for letter in letters:
                tp = TopicPartition(letter.topic, letter.partition)
                progress[tp] = triage(letter, progress[tp], wanted, plan, report, from_beginning)
            await _publish(producer, report.moved[moved_so_far:])
            await _commit(consumer, before, progress, dry_run)
        before = dict(progress)
        progress = {tp: p.read_to(bounds[tp][1]) for tp, p in progress.items()}
        await _commit(consumer, before, progress, dry_run)
    return report
