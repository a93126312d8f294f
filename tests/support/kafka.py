"""The real broker from a test's side: where topics end, what groups committed, producing raw bytes and reading them back."""

from dataclasses import dataclass

from contracts.connection import client_options

from tests.support.waiting import NotYet, eventually


@dataclass(frozen=True)
class Seen:
    """A record read back from the broker, decoded."""

    topic: str
    partition: int
    offset: int
    key: str
    headers: dict
    event: object  # None for a record of a topic outside the registry (a dead-letter topic)
    value: bytes = b""


async def end_offsets(bootstrap: str, topic_names) -> dict:
    """Where each partition of the topics ends now: everything published after this lies beyond."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from fleet.ops.topics import partitions_of

    counts = await partitions_of(bootstrap, list(topic_names))
    partitions = [TopicPartition(n, p) for n, c in counts.items() for p in range(c)]
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap, group_id: str, partitions=None) -> dict:
    """What the group has committed now: {TopicPartition: offset}. Asked for all its partitions, those it never committed
    are missing; asked for given `partitions`, each is there, at -1 where it never committed."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group_id, partitions=partitions)).items()}
    finally:
        await admin.close()


async def wait_until_committed(bootstrap, group_id: str, ends: dict, timeout_s: float = 5.0) -> None:
    """Waits until the group has committed every partition of `ends` exactly up to its end (a commit follows the last
    record handled by a moment); fails with what the group had committed."""

    async def caught_up():
        committed = await committed_offsets(bootstrap, group_id)
        return all(committed.get(tp) == end for tp, end in ends.items()) or NotYet(committed)

    await eventually(caught_up, f"group {group_id} to commit up to {ends}", timeout_s=timeout_s)


async def wait_until_committed_past(bootstrap, group_id: str, ends: dict, timeout_s: float = 30.0) -> None:
    """Waits until the group has committed every partition of `ends` at or beyond its end: what `wait_until_committed`
    waits for, while other tests (or other runs on this broker) may append to the same topics meanwhile."""

    async def caught_up():
        committed = await committed_offsets(bootstrap, group_id, list(ends))
        behind = {f"{tp.topic}[{tp.partition}]": (committed.get(tp), end) for tp, end in ends.items() if committed.get(tp, -1) < end}
        return not behind or NotYet(behind)

    await eventually(caught_up, f"group {group_id} to commit past {len(ends)} partitions' ends", timeout_s=timeout_s)


async def start_group_at_end(bootstrap: str, group_id: str, models) -> None:
    """A new consumer group whose committed offsets are the topics' current ends, so a service started in it
    handles only what the test publishes, not the topics' whole history; its retry groups likewise. Every version of
    each model's event counts: a worker on the newest reads the older ones through their upcasters."""
    from contracts import REGISTRY

    topics = list({v: None for m in models for v in REGISTRY.versions(REGISTRY.of(m)) if not v.retired})
    await commit_at_end(bootstrap, group_id, [t.name for t in topics])
    for tier in range(1, 4):
        await commit_at_end(bootstrap, f"{group_id}.retry.{tier}", [t.retry_topic(tier) for t in topics])


async def commit_at_end(bootstrap: str, group_id: str, topic_names) -> None:
    """Commits the group at the current end of each partition of the topics: it goes on from there, never earlier."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import OffsetAndMetadata

    ends = await end_offsets(bootstrap, topic_names)
    consumer = AIOKafkaConsumer(**client_options(bootstrap), group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in ends.items()})
    finally:
        await consumer.stop()


async def topics_have_leaders(admin, names, *, partitions: int | None = None):
    """True once every partition of the topics has a leader (and, given `partitions`, each topic has that many), else
    NotYet with the topics as described: for `eventually`, after creating topics or starting a broker."""
    described = await admin.describe_topics(list(names))
    led = all(t["partitions"] and (partitions is None or len(t["partitions"]) == partitions)
              and all(p["leader"] >= 0 for p in t["partitions"]) for t in described)
    return led or NotYet(described)


async def groups_have_members(bootstrap: str, wanted: dict[str, int]):
    """True once each consumer group has at least its wanted number of members, else NotYet with the counts: for
    `eventually`, while a fleet starts."""
    from fleet.ops.groups import group_members

    members = await group_members(bootstrap, list(wanted))
    return all(members[group] >= count for group, count in wanted.items()) or NotYet(members)


class TopicReader:
    """Reads what lands on topics after the moment it was created, until it has what a test waits for."""

    def __init__(self, bootstrap: str, models=(), *, raw_topics=(), starts: dict | None = None) -> None:
        from contracts import REGISTRY

        self.bootstrap = bootstrap
        self.topics = {REGISTRY.of(m).name: REGISTRY.of(m) for m in models} | {name: None for name in raw_topics}
        self.starts: dict = starts or {}
        self.seen: list[Seen] = []

    async def __aenter__(self) -> "TopicReader":
        from aiokafka import AIOKafkaConsumer

        self.starts = self.starts or await end_offsets(self.bootstrap, self.topics)
        self._consumer = AIOKafkaConsumer(**client_options(self.bootstrap), enable_auto_commit=False)
        await self._consumer.start()
        self._consumer.assign(list(self.starts))
        for partition, offset in self.starts.items():
            self._consumer.seek(partition, offset)
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._consumer.stop()

    async def wait_for(self, done, timeout_s: float = 60.0) -> list[Seen]:
        """Reads until `done(seen)` is true; fails the test with what it saw if the time runs out."""
        import asyncio

        from contracts import decode_value

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done(self.seen):
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s; saw {len(self.seen)} records: {[(s.topic, s.key) for s in self.seen][:20]}")
            batches = await self._consumer.getmany(timeout_ms=250)
            for records in batches.values():
                for r in records:
                    headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
                    topic = self.topics[r.topic]
                    event = decode_value(topic, r.value) if topic else None
                    key = r.key.decode("utf-8", "replace") if r.key else ""
                    self.seen.append(Seen(r.topic, r.partition, r.offset, key, headers, event, r.value or b""))
        return self.seen

    async def read_to_end(self, timeout_s: float = 30.0) -> list[Seen]:
        """Reads every partition up to where it ends now: nothing published before this call is left unread."""
        ends = await end_offsets(self.bootstrap, self.topics)
        await self.wait_for(lambda _: all(self._position(tp) >= end for tp, end in ends.items()), timeout_s)
        return self.seen

    def _position(self, tp) -> int:
        """Where the reader is on a partition: the offset after the last record it read there, or where it started."""
        offsets = [s.offset for s in self.seen if s.topic == tp.topic and s.partition == tp.partition]
        return max(offsets) + 1 if offsets else self.starts[tp]

    async def wait_for_keys(self, keys, per_key: int = 1, timeout_s: float = 60.0) -> list[Seen]:
        """Waits until every key has `per_key` records (records of other keys, from other tests, are ignored)."""
        wanted = set(keys)

        def done(seen):
            counts = {}
            for s in seen:
                if s.key in wanted:
                    counts[s.key] = counts.get(s.key, 0) + 1
            return all(counts.get(k, 0) >= per_key for k in wanted)

        await self.wait_for(done, timeout_s)
        return [s for s in self.seen if s.key in wanted]


async def produce_raw(bootstrap: str, records) -> None:
    """Publishes (topic, key, value, headers[, partition]) tuples with a plain aiokafka producer: no eventfleet code on the way."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic, key, value, headers, *partition in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers, partition=partition[0] if partition else None)
    finally:
        await producer.stop()


async def produce_raw_in_one_batch(bootstrap: str, records, partition: int = 0) -> None:
    """Publishes (topic, key, value, headers) tuples to one partition as one producer batch, in their order, so that a
    consumer's next poll brings them together (`produce_raw` waits for each record before it sends the next)."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        **client_options(bootstrap), acks="all", enable_idempotence=True, linger_ms=200, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        sent = [
            await producer.send(topic, value=value, key=key, headers=headers, partition=partition)
            for topic, key, value, headers in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
