"""A producer that cannot go on is closed and replaced: one whose broker cannot be reached leaves nothing for the garbage
collector to warn about ("Unclosed AIOKafkaProducer"), and one whose sender stopped for good is not used again."""

import contextlib
import gc
import warnings
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber, RequestTimedOutError

from contracts.publisher import Publisher
from fleet.ops import runner
from fleet.runtime.delivery.outcomes import WorkerState
from fleet.runtime.delivery.dead_letters import KafkaSink
from fleet.runtime.store import OutboxRelay, open_store
from tests.support import signer_of

NOBODY = "127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


@contextlib.contextmanager
def no_producer_left_unclosed():
    """aiokafka warns when it collects a producer nobody closed: collect now and look for that warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    unclosed = [str(w.message) for w in caught if "Unclosed AIOKafkaProducer" in str(w.message)]
    assert not unclosed, unclosed


async def test_a_publisher_that_cannot_reach_its_broker_raises_and_closes_its_producer():
    with no_producer_left_unclosed(), pytest.raises(KafkaConnectionError):
        async with Publisher(NOBODY, service="storefront", signer=signer_of("storefront")):
            raise AssertionError("never entered")


async def test_a_dead_letter_sink_that_cannot_reach_its_broker_closes_the_producer_and_tries_a_new_one_next_time():
    sink = KafkaSink(NOBODY, "payments-dead-letters")
    for _ in range(2):
        with no_producer_left_unclosed(), pytest.raises(KafkaConnectionError):
            await sink(topic="orders.placed.v1.dlq", key=b"k", value=b"v", headers=[])
        assert sink._producer is None, "a producer whose start failed is not kept"


async def test_an_outbox_relay_that_cannot_reach_its_broker_closes_its_producer_and_builds_a_new_one(tmp_path):
    async with await open_store(f"sqlite:///{tmp_path / 'payments.db'}") as store:
        with no_producer_left_unclosed():
            relay = OutboxRelay(store, NOBODY, "payments-relay")
            with pytest.raises(KafkaConnectionError):
                await relay.start()
            with pytest.raises(KafkaConnectionError):
                await relay.drain()  # a new producer: a closed one would fail otherwise ("already closed")
            await relay.stop()
            del relay  # collected with whatever producer it still holds


class FakeDeadLetterProducer:
    """What the dead-letter sink uses of aiokafka's producer; `fails_with` is raised by every send."""

    def __init__(self, fails_with: Exception | None = None) -> None:
        self.fails_with, self.started, self.sent = fails_with, False, []

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def send_and_wait(self, topic, key, value, headers) -> None:
        if self.fails_with is not None:
            raise self.fails_with
        self.sent.append(topic)


async def test_a_dead_letter_sink_whose_producer_stopped_for_good_sends_the_next_dead_letter_with_a_new_one():
    wedged, fresh = FakeDeadLetterProducer(OutOfOrderSequenceNumber("sequence lost")), FakeDeadLetterProducer()
    built = iter([wedged, fresh])
    sink = KafkaSink(NOBODY, "payments-dead-letters", make_producer=lambda: next(built))
    with pytest.raises(OutOfOrderSequenceNumber):
        await sink(topic="orders.placed.v1.dlq", key=b"k", value=b"v", headers=[])
    await sink(topic="orders.placed.v1.dlq", key=b"k", value=b"v", headers=[])
    assert not wedged.started and fresh.sent == ["orders.placed.v1.dlq"]


async def test_a_dead_letter_sink_keeps_a_producer_whose_send_only_timed_out():
    slow = FakeDeadLetterProducer(RequestTimedOutError())
    built = iter([slow])
    sink = KafkaSink(NOBODY, "payments-dead-letters", make_producer=lambda: next(built))
    with pytest.raises(RequestTimedOutError):
        await sink(topic="orders.placed.v1.dlq", key=b"k", value=b"v", headers=[])
    slow.fails_with = None
    await sink(topic="orders.placed.v1.dlq", key=b"k", value=b"v", headers=[])
    assert slow.started and slow.sent == ["orders.placed.v1.dlq"]


def test_a_worker_whose_producer_stopped_for_good_is_stopped_once_to_be_restarted():
    state = WorkerState("shipping")
    stops = []
    state.stop_worker = lambda: stops.append("stop")
    lost = OutOfOrderSequenceNumber("sequence lost")

    assert state.send_failed(lost, "publishing what its handler emitted") is False  # not a refusal: logged by the caller
    assert state.send_failed(OutOfOrderSequenceNumber("again"), "publishing what its handler emitted") is False
    assert state.lost_producer is lost and stops == ["stop"]
    assert state.denials.first is None, "not a refusal: the runner exits 75 (restart), not 78"


def test_a_worker_whose_send_only_timed_out_keeps_running_and_the_record_comes_again():
    state = WorkerState("shipping")
    stops = []
    state.stop_worker = lambda: stops.append("stop")
    assert state.send_failed(RequestTimedOutError(), "publishing what its handler emitted") is False
    assert state.lost_producer is None and stops == []


class FakeApp:
    """What the runner uses of a worker's FastStream app: its broker's state, run() and exit()."""

    def __init__(self, lose_producer: bool) -> None:
        self.broker = SimpleNamespace(state=WorkerState("shipping"))
        self.lose_producer = lose_producer
        self.after_startup_hooks: list = []

    def after_startup(self, hook):
        self.after_startup_hooks.append(hook)
        return hook

    async def run(self, sleep_time: float = 0.1) -> None:
        for hook in self.after_startup_hooks:
            await hook()
        if self.lose_producer:
            self.broker.state.send_failed(OutOfOrderSequenceNumber("sequence lost"), "publishing what its handler emitted")

    def exit(self) -> None:
        pass


def _run_worker(monkeypatch, app: FakeApp) -> None:
    monkeypatch.setattr(runner.catalog, "create_app", lambda name: app)
    monkeypatch.setattr(runner, "configure_logging", lambda name: None)
    monkeypatch.setattr(runner, "configure_tracing", lambda name: None)
    runner.run_service("shipping")


def test_the_runner_of_a_worker_that_lost_its_producer_exits_75_so_that_it_is_restarted(monkeypatch):
    with pytest.raises(SystemExit) as exited:
        _run_worker(monkeypatch, FakeApp(lose_producer=True))
    assert exited.value.code == runner.EXIT_PRODUCER_LOST == 75


def test_the_runner_of_a_worker_that_stopped_normally_returns(monkeypatch):
    _run_worker(monkeypatch, FakeApp(lose_producer=False))


def test_a_started_worker_takes_what_it_built_to_start_out_of_the_garbage_collectors_full_passes(monkeypatch):
    import gc

    gc.unfreeze()
    try:
        _run_worker(monkeypatch, FakeApp(lose_producer=False))
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
