"""What fleet.runtime.adapters reaches into still is what it expects: an upgrade of FastStream or aiokafka that moves it fails here, loudly."""

import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError
from faststream.kafka import KafkaBroker
from faststream.kafka.configs.broker import KafkaBrokerConfig
from faststream.kafka.subscriber.usecase import LogicSubscriber

from fleet.runtime.adapters import PINNED, FleetConsumer, fetched_position, use_consumer_class

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("package", sorted(PINNED))
def test_the_installed_faststream_and_aiokafka_are_the_versions_the_adapters_were_written_for(package):
    installed = importlib.metadata.version(package)
    assert installed == PINNED[package], (
        f"{package} {installed} is installed, but fleet.runtime.adapters was written against {PINNED[package]}: "
        "check each reach into its internals there, then update PINNED and pyproject.toml together"
    )


@pytest.mark.parametrize("package", sorted(PINNED))
def test_pyproject_pins_the_same_versions(package):
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {re.split(r"[\[=]", d, maxsplit=1)[0]: d.rsplit("==", 1)[-1] for d in dependencies if "==" in d}
    assert pins.get(package) == PINNED[package]


def test_faststream_still_builds_each_subscribers_consumer_with_the_brokers_builder():
    """use_consumer_class swaps the function of `KafkaBrokerConfig.builder`: FastStream must still set it to a partial of
    aiokafka's consumer, and each subscriber must still start its consumer through it."""
    assert "self.builder = partial(aiokafka.AIOKafkaConsumer" in inspect.getsource(KafkaBrokerConfig.connect)
    assert "_outer_config.builder" in inspect.getsource(LogicSubscriber.builder.fget)
    assert "self.builder(" in inspect.getsource(LogicSubscriber.start)


def test_the_swapped_builder_keeps_every_option_faststream_put_together():
    broker = KafkaBroker(["127.0.0.1:1"], client_id="payments")
    before = broker.config.broker_config.builder
    assert before.func is AIOKafkaConsumer
    use_consumer_class(broker, FleetConsumer)
    after = broker.config.broker_config.builder
    assert after.func is FleetConsumer and after.keywords == before.keywords


def test_the_swap_refuses_a_builder_it_does_not_know():
    broker = KafkaBroker(["127.0.0.1:1"])
    use_consumer_class(broker, FleetConsumer)
    with pytest.raises(RuntimeError, match="not aiokafka's"):
        use_consumer_class(broker, FleetConsumer)


@pytest.mark.parametrize("name", ["getone", "getmany", "stop"])
def test_aiokafka_still_has_the_public_methods_fleet_consumer_overrides(name):
    ours = inspect.signature(getattr(FleetConsumer, name))
    theirs = inspect.signature(getattr(AIOKafkaConsumer, name))
    assert list(ours.parameters) == list(theirs.parameters)


async def test_a_refused_fetch_is_reported_before_it_goes_up(monkeypatch):
    async def refused(self, *partitions, **options):
        raise TopicAuthorizationFailedError("orders.placed.v1")

    monkeypatch.setattr(AIOKafkaConsumer, "getone", refused)
    monkeypatch.setattr(AIOKafkaConsumer, "getmany", refused)
    reported = []
    consumer = FleetConsumer(
        bootstrap_servers="127.0.0.1:1",
        group_id="payments",
        enable_auto_commit=False,
        fetch_failed=lambda c, error: reported.append((c.group, type(error).__name__)),
    )
    for fetch in (consumer.getone, consumer.getmany):
        with pytest.raises(TopicAuthorizationFailedError):
            await fetch()
    assert reported == [("payments", "TopicAuthorizationFailedError")] * 2
    await consumer.stop()


async def test_a_poll_waits_for_a_first_record_as_long_as_the_consumer_is_told_however_briefly_it_is_asked(monkeypatch):
    waited = []

    async def getmany(self, *partitions, timeout_ms=0, max_records=None):
        waited.append(timeout_ms)
        return {}

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", getmany)
    consumer = FleetConsumer(bootstrap_servers="127.0.0.1:1", group_id="payments", enable_auto_commit=False,
                             idle_wait_ms=5000)
    await consumer.getmany(timeout_ms=100, max_records=500)
    await consumer.getmany(timeout_ms=8000)
    assert waited == [5000, 8000]
    await consumer.stop()


def test_the_brokers_own_producer_is_found_once_connected_and_none_before():
    from types import SimpleNamespace

    from aiokafka import AIOKafkaProducer

    from fleet.runtime.adapters import kafka_producer_of

    broker = KafkaBroker(["127.0.0.1:1"])
    assert kafka_producer_of(broker) is None  # not connected: FastStream's stand-in holds none
    from faststream.kafka.publisher.producer import AioKafkaFastProducerImpl

    producer = AIOKafkaProducer.__new__(AIOKafkaProducer)  # not started: only its class matters here
    connected = AioKafkaFastProducerImpl(parser=None, decoder=None)
    connected._producer = SimpleNamespace(producer=producer)  # as its connect() leaves it (RealProducer)
    broker.config.broker_config.producer = connected
    assert kafka_producer_of(broker) is producer


def test_faststream_still_keeps_its_aiokafka_producer_where_the_adapter_reads_it():
    from faststream.kafka.publisher.producer import AioKafkaFastProducerImpl

    source = inspect.getsource(AioKafkaFastProducerImpl)
    assert "self._producer = RealProducer(producer)" in source and "self._producer.producer.send(" in source


async def test_the_fetched_position_is_read_from_the_partition_state_aiokafka_keeps():
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id="g", enable_auto_commit=False)
    tp = TopicPartition("orders.placed.v1", 3)
    try:
        assert fetched_position(consumer, tp) is None  # not assigned
        consumer.assign([tp])
        assert fetched_position(consumer, tp) is None  # assigned, no position yet: `position()` would wait
        consumer._subscription.subscription.assignment.state_value(tp).seek(40)
        assert fetched_position(consumer, tp) == 40
    finally:
        await consumer.stop()


def test_every_consumer_of_a_worker_idles_on_the_fleets_long_polls_the_control_consumer_included(tmp_path):
    """An idle consumer on aiokafka's defaults fetches twice a second and wakes five times a second: the operators'
    control consumer once did, a third of an idle worker's CPU. FastStream keeps each subscriber's consumer options in
    `_connection_args` (read here only: a FastStream upgrade that moves them fails this test, not a worker)."""
    from fleet.runtime.delivery.batches import IDLE_FETCHER_WAKE_MS
    from services.payments import create_app
    from services.payments.settings import PaymentsSettings

    app = create_app(PaymentsSettings(store_url=f"sqlite:///{tmp_path / 'payments.db'}"))
    wait_ms = app.broker.kafka.fetch_max_wait_ms
    consumers = {s.topic_names_for_subscribe[0]: s._connection_args for s in app.broker.subscribers}
    assert "fleet.control.v1" in consumers and len(consumers) == 5, "its topics, three retry tiers, the control topic"
    for topic, options in consumers.items():
        assert options["fetch_max_wait_ms"] == wait_ms > 500, topic
        assert options["consumer_timeout_ms"] == IDLE_FETCHER_WAKE_MS > 200, topic


def test_a_worker_looks_whether_it_was_told_to_stop_twice_a_second_not_ten_times():
    """FastStream's app.run wakes every `sleep_time` to look at its exit flag (0.1 s by default)."""
    import asyncio

    from fleet.ops import runner

    class App:
        asked: dict = {}

        async def run(self, **options):
            self.asked.update(options)

    asyncio.run(runner._run_closing_on_failed_start(App()))
    assert App.asked == {"sleep_time": runner.EXIT_CHECK_S} and runner.EXIT_CHECK_S >= 0.5


async def test_while_records_flow_the_broker_holds_a_fetch_briefly_and_once_idle_as_long_as_configured(monkeypatch):
    """A fetch of idle partitions must not be held for seconds while a backlog waits behind it (one fetch per broker)."""
    from types import SimpleNamespace

    from fleet.runtime.adapters import BUSY_FETCH_WAIT_MS, BUSY_POLL_MS

    polls = [{TopicPartition("orders.placed.v2", 0): ["a record"]}]
    waited = []

    async def getmany(self, *partitions, timeout_ms=0, max_records=None):
        waited.append((timeout_ms, self._fetcher._fetch_max_wait_ms))
        return polls.pop(0) if polls else {}

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", getmany)
    consumer = FleetConsumer(bootstrap_servers="127.0.0.1:1", group_id="payments", enable_auto_commit=False,
                             fetch_max_wait_ms=5000, idle_wait_ms=5000)
    consumer._fetcher = SimpleNamespace(_fetch_max_wait_ms=5000)  # what start() builds: aiokafka's Fetcher
    await consumer.getmany(max_records=500)
    assert consumer._fetcher._fetch_max_wait_ms == BUSY_FETCH_WAIT_MS < 100
    await consumer.getmany(max_records=500)
    assert consumer._fetcher._fetch_max_wait_ms == 5000
    # The poll after records: first a short one on short fetches; nothing came, so the rest on long ones.
    assert waited == [(5000, 5000), (BUSY_POLL_MS, BUSY_FETCH_WAIT_MS), (5000, 5000)]
    consumer._fetcher = None  # as before start(): stop() has nothing of it to close
    await consumer.stop()


def test_aiokafkas_fetcher_still_reads_its_fetch_wait_each_time_it_builds_a_fetch_request():
    from aiokafka.consumer.consumer import AIOKafkaConsumer as Consumer
    from aiokafka.consumer.fetcher import Fetcher

    assert "self._fetcher = Fetcher(" in inspect.getsource(Consumer.start)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(Fetcher.__init__)
    builds = inspect.getsource(Fetcher._get_actions_per_node)
    assert "FetchRequest(" in builds and "self._fetch_max_wait_ms," in builds
    assert "elif node_id in self._in_flight:" in builds, "still one fetch per broker at a time: the reason for the reach"
