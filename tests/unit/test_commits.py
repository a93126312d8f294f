"""The offset committer: a record is committed only after its outcome and every send of its handler are durable,
together with the others, and a failed send sends the consumer back to its record."""

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition

from fleet.runtime.delivery.commits import FlushOnRevoke, OffsetCommitter


class FakeConsumer:
    """Records commits and seeks as the real consumer would receive them."""

    def __init__(self) -> None:
        self.commits: list[dict] = []
        self.seeks: list[tuple] = []

    async def commit(self, offsets):
        self.commits.append({(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()})

    def seek(self, tp, offset):
        self.seeks.append((tp.topic, tp.partition, offset))


def record(offset: int, partition: int = 0, topic: str = "orders.placed.v1"):
    return SimpleNamespace(topic=topic, partition=partition, offset=offset)


def acked() -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_result("metadata")
    return future


def failed() -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(ConnectionError("broker gone"))
    return future


def committer() -> tuple[OffsetCommitter, FakeConsumer]:
    consumer = FakeConsumer()
    return OffsetCommitter(SimpleNamespace(consumer=consumer), interval_s=60), consumer


async def test_records_are_committed_together_past_the_last_one_of_each_partition():
    commits, consumer = committer()
    for r in (record(4), record(5), record(9, partition=2)):
        commits.done(r, [acked()])
    assert consumer.commits == [], "nothing is committed at once"
    await commits.flush()
    assert consumer.commits == [{("orders.placed.v1", 0): 6, ("orders.placed.v1", 2): 10}]


async def test_a_record_whose_emitted_event_failed_is_not_committed_and_the_consumer_goes_back_to_it():
    commits, consumer = committer()
    commits.done(record(4), [acked()])
    commits.done(record(5), [acked(), failed()])
    commits.done(record(6), [acked()])
    await commits.flush()
    assert consumer.commits == [{("orders.placed.v1", 0): 5}], "up to the last record before the failed one"
    assert consumer.seeks == [("orders.placed.v1", 0, 5)]


async def test_the_error_of_a_failed_send_is_told_to_the_worker_which_may_have_to_stop():
    told = []
    consumer = FakeConsumer()
    commits = OffsetCommitter(SimpleNamespace(consumer=consumer), interval_s=60, send_failed=told.append)
    commits.done(record(4), [acked(), failed()])
    await commits.flush()
    assert [type(error) for error in told] == [ConnectionError]


async def test_a_record_that_is_redelivered_takes_back_nothing_before_it_and_everything_after():
    commits, consumer = committer()
    commits.done(record(4))
    commits.redeliver(record(5))
    await commits.flush()
    assert consumer.seeks == [("orders.placed.v1", 0, 5)] and consumer.commits == [{("orders.placed.v1", 0): 5}]


async def test_revoked_partitions_are_committed_before_they_move_and_the_others_wait_for_their_turn():
    commits, consumer = committer()
    commits.done(record(1, partition=0))
    commits.done(record(7, partition=3))
    listener = FlushOnRevoke()
    listener.committer = commits
    await listener.on_partitions_revoked({TopicPartition("orders.placed.v1", 3)})
    assert consumer.commits == [{("orders.placed.v1", 3): 8}]
    await commits.flush()
    assert consumer.commits[-1] == {("orders.placed.v1", 0): 2}


async def test_a_flush_waits_for_the_acks_of_what_the_handlers_emitted():
    commits, consumer = committer()
    pending = asyncio.get_running_loop().create_future()
    commits.done(record(3), [pending])
    flushing = asyncio.create_task(commits.flush())
    await asyncio.sleep(0.01)
    assert consumer.commits == [], "not before the broker acknowledged the emitted event"
    pending.set_result("metadata")
    await flushing
    assert consumer.commits == [{("orders.placed.v1", 0): 4}]


async def test_the_committer_flushes_by_itself_after_its_interval():
    consumer = FakeConsumer()
    commits = OffsetCommitter(SimpleNamespace(consumer=consumer), interval_s=0.01)
    commits.done(record(0))
    commits.done(record(1))
    await asyncio.sleep(0.1)
    assert consumer.commits == [{("orders.placed.v1", 0): 2}], "one commit for both"


async def test_the_timer_commits_what_is_acknowledged_and_leaves_what_is_in_flight_for_its_next_turn():
    consumer = FakeConsumer()
    commits = OffsetCommitter(SimpleNamespace(consumer=consumer), interval_s=0.01)
    in_flight = asyncio.get_running_loop().create_future()
    commits.done(record(1), [acked()])
    commits.done(record(2), [in_flight])
    commits.done(record(3), [acked()])
    await asyncio.sleep(0.05)
    assert consumer.commits == [{("orders.placed.v1", 0): 2}], "up to the record before the one still in flight"
    in_flight.set_result("metadata")
    await asyncio.sleep(0.05)
    assert consumer.commits[-1] == {("orders.placed.v1", 0): 4}
