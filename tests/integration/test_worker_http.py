"""A payments worker's HTTP port on the real broker: ready once assigned and caught up, /metrics with what it handled,
its lag and its last commit, and /health/live failing while a handler is stuck and passing again after."""

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from contracts import OrderPlaced, PaymentAuthorized, PaymentDeclined
from fleet.runtime.settings import KafkaSettings
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import NotYet, RunningApps, TopicReader, a_record, an_order, as_raw, eventually, produce_raw, start_group_at_end

TOPIC = "orders.placed.v1"
TOPIC_V2 = "orders.placed.v2"  # payments reads both while v1 is not retired


def _payments(kafka, group_id, tmp_path, **settings):
    return create_payments(PaymentsSettings(group_id=group_id, kafka=KafkaSettings(bootstrap_servers=kafka), http_port=0,
                                            store_url=f"sqlite:///{tmp_path / 'payments'}.db", **settings))


def _samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(samples, name: str, **labels) -> float | None:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


async def _produce_in_one_batch(kafka: str, records, partition: int) -> None:
    """One produce request, so the consumer's first fetch holds them all: the lag it knows is highwater minus position,
    and highwater is only as fresh as the partition's last fetch (none happens while a fetched record waits)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", enable_idempotence=True, linger_ms=500)
    await producer.start()
    try:
        sent = [await producer.send(topic, value=value, key=key, headers=headers, partition=partition)
                for topic, key, value, headers in map(as_raw, records)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


class Probe:
    """Remembers the last response of each path, so a failed wait says what the worker answered."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def status(self, path: str, wanted: int, reason: str | None = None):
        response = await self.client.get(path)
        body = response.json()
        ok = response.status_code == wanted and (reason is None or body.get("reason") == reason)
        return (response.status_code, body) if ok else NotYet((response.status_code, body))


async def _not(check):
    return not await check()


async def test_ready_once_assigned_and_caught_up_and_metrics_show_handled_lag_and_last_commit(kafka, group_id, tmp_path):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    orders = [a_record(an_order()) for _ in range(5)]
    started_at = time.time()
    app = _payments(kafka, group_id, tmp_path)
    async with RunningApps(app), TopicReader(kafka, (PaymentAuthorized, PaymentDeclined)) as reader:
        port = app.broker.worker_http.port
        assert port and port not in (8101,)  # 0 asked for a free port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            probe = Probe(client)
            status, ready = await eventually(lambda: probe.status("/health/ready", 200), "ready before any order")
            assert ready["reason"] == "ok" and ready["lag"] == 0
            await produce_raw(kafka, [as_raw(r) for r in orders])
            await reader.wait_for_keys([r.key for r in orders])

            async def handled_and_committed():
                samples = _samples((await client.get("/metrics")).text)
                handled = _value(samples, "eventfleet_events_total", topic=TOPIC, outcome="handled")
                committed = _value(samples, "eventfleet_last_commit_timestamp_seconds")
                lags = [s.value for s in samples if s.name == "eventfleet_consumer_lag" and s.labels["group"] == group_id]
                # The retry tiers' gauges appear once their consumers have partitions and know their lag.
                tiers = {s.labels["group"] for s in samples if s.name == "eventfleet_consumer_lag"} - {group_id}
                done = (handled == len(orders) and committed and committed >= started_at and lags and not any(lags)
                        and len(tiers) == 3)
                return samples if done else NotYet(samples)

            samples = await eventually(handled_and_committed, "all orders handled and committed, and no lag left")
            live = await client.get("/health/live")
            ready = await client.get("/health/ready")
    lags = [s for s in samples if s.name == "eventfleet_consumer_lag" and s.labels["group"] == group_id]
    # The main subscriber reads orders.placed.v2 and, through its upcaster, v1: a gauge per partition of each.
    assert lags and {s.labels["topic"] for s in lags} == {TOPIC, TOPIC_V2}, "one gauge per partition of the main subscriber"
    for topic in (TOPIC, TOPIC_V2):
        partitions = sorted(int(s.labels["partition"]) for s in lags if s.labels["topic"] == topic)
        assert partitions == list(range(len(partitions))), topic
    assert all(s.value == 0 for s in lags), "caught up: nothing left to consume"
    retry_groups = {s.labels["group"] for s in samples if s.name == "eventfleet_consumer_lag"} - {group_id}
    assert retry_groups == {f"{group_id}.retry.{n}" for n in (1, 2, 3)}
    assert _value(samples, "eventfleet_handler_duration_seconds_count", topic=TOPIC) == len(orders)
    # Other test runs on this broker may publish too (their records are dead-lettered here: their keys are unknown).
    assert _value(samples, "eventfleet_events_received_total", topic=TOPIC) >= len(orders)
    assert started_at <= _value(samples, "eventfleet_last_commit_timestamp_seconds") <= time.time()
    assert _value(samples, "eventfleet_outbox_backlog") >= 0
    assert _value(samples, "eventfleet_store_commit_seconds_count") >= 1, "payments' batches committed its store"
    assert _value(samples, "eventfleet_store_commit_seconds_sum") > 0
    assert live.status_code == 200 and live.json()["reason"] == "ok"
    assert ready.status_code == 200 and ready.json()["reason"] == "ok"


async def test_liveness_fails_while_a_handler_is_stuck_and_passes_again_after(kafka, group_id, tmp_path, monkeypatch):
    # The first record this worker handles takes 4 s longer (fleet/faults.py); the liveness bound is 1.5 s.
    monkeypatch.setenv("FLEET_FAULTS_SLOW_S", "4")
    monkeypatch.setenv("FLEET_FAULTS_SLOW_AFTER", "0")
    monkeypatch.setenv("FLEET_FAULTS_SLOW_COUNT", "1")
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    app = _payments(kafka, group_id, tmp_path, liveness_bound_s=1.5)
    orders = [a_record(an_order()) for _ in range(2)]
    async with RunningApps(app), TopicReader(kafka, (PaymentAuthorized, PaymentDeclined)) as reader:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.broker.worker_http.port}", timeout=10) as client:
            probe = Probe(client)
            await eventually(lambda: probe.status("/health/ready", 200), "ready")
            before = await client.get("/health/live")
            await _produce_in_one_batch(kafka, orders, partition=0)  # the second waits behind the first, fetched with it
            _, stuck = await eventually(lambda: probe.status("/health/live", 503), "liveness to fail while the slow handler runs", timeout_s=30)

            async def lag_of_partition_0() -> float | None:  # None while the gauge is not there
                samples = _samples((await client.get("/metrics")).text)
                return _value(samples, "eventfleet_consumer_lag", topic=TOPIC, partition="0", group=group_id)

            # Both count as lag while the first is stuck: neither is handled (they came in one batch, fetched together).
            waiting = await eventually(lag_of_partition_0, "the two orders to show as lag while the first is stuck", timeout_s=3)
            _, recovered = await eventually(lambda: probe.status("/health/live", 200), "liveness to pass again", timeout_s=30)
            await reader.wait_for_keys([r.key for r in orders])
            await eventually(lambda: _not(lag_of_partition_0), "the lag to drain")
            caught_up = await lag_of_partition_0()  # drained: the gauge is there and says 0, not merely gone
    assert before.status_code == 200
    assert waiting == 2 and caught_up == 0
    assert stuck["status"] == "fail" and stuck["reason"] == "handler_stuck" and stuck["oldest_in_flight_s"] > 1.5
    assert recovered["status"] == "ok" and recovered["oldest_in_flight_s"] < 1.5
    assert app.broker.state.faults.slowed == 1, "the fault really slowed one handler"
