"""The offset committer: one commit per batch, past the last record of each partition, and back to the first record of
each partition when a batch's outcomes are not durable."""

from types import SimpleNamespace

from fleet.runtime.delivery.commits import OffsetCommitter


class FakeConsumer:
    """Records commits and seeks as the real consumer would receive them."""

    def __init__(self, refuse: int = 0) -> None:
        self.commits: list[dict] = []
        self.seeks: list[tuple] = []
        self.refuse = refuse  # this many commits are refused first (a rebalance took the partitions)

    async def commit(self, offsets):
        if self.refuse:
            self.refuse -= 1
            raise RuntimeError("CommitFailedError: the group rebalanced")
        self.commits.append({(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()})

    def seek(self, tp, offset):
        self.seeks.append((tp.topic, tp.partition, offset))


def record(offset: int, partition: int = 0, topic: str = "orders.placed.v1"):
    return SimpleNamespace(topic=topic, partition=partition, offset=offset)


def committer(consumer: FakeConsumer | None = None) -> tuple[OffsetCommitter, FakeConsumer, list[str]]:
    consumer = consumer or FakeConsumer()
    told: list[str] = []
    return OffsetCommitter(SimpleNamespace(consumer=consumer), committed=lambda: told.append("committed")), consumer, told


async def test_a_batch_is_committed_once_past_its_last_record_on_each_partition():
    commits, consumer, told = committer()
    await commits.commit([record(4), record(5), record(9, partition=2), record(6)])
    assert consumer.commits == [{("orders.placed.v1", 0): 7, ("orders.placed.v1", 2): 10}]
    assert told == ["committed"]


async def test_a_refused_commit_is_not_told_as_committed_and_does_not_raise():
    commits, consumer, told = committer(FakeConsumer(refuse=1))
    await commits.commit([record(4)])
    assert consumer.commits == [] and told == []
    await commits.commit([record(5)])
    assert consumer.commits == [{("orders.placed.v1", 0): 6}] and told == ["committed"]


async def test_a_batch_that_is_not_durable_sends_each_partition_back_to_its_first_record():
    commits, consumer, _ = committer()
    commits.redeliver([record(4), record(5), record(9, partition=2), record(6)])
    assert sorted(consumer.seeks) == [("orders.placed.v1", 0, 4), ("orders.placed.v1", 2, 9)]
    assert consumer.commits == []


async def test_without_a_consumer_there_is_nothing_to_commit_or_seek():
    commits = OffsetCommitter(SimpleNamespace(consumer=None))
    await commits.commit([record(4)])
    commits.redeliver([record(4)])
