"""A worker's HTTP port on the in-memory broker: /metrics in Prometheus text with per-topic outcomes and the handler
histogram, no payload or key material in it, probes answering with their reasons, commits timed, lag read without waiting."""

import socket
from types import SimpleNamespace

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import TestKafkaBroker
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from contracts import REGISTRY
from fleet.runtime.delivery.commits import OffsetCommitter
from fleet.runtime.delivery.outcomes import Subscription
from fleet.runtime.delivery.retries import RetryPolicy
from fleet.runtime.observe.http import _bind, lag_of, partition_lags
from services.inventory import InventorySettings
from services.notifications import NotificationsSettings
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from services.shipping import ShippingSettings
from services.tracker.settings import TrackerSettings
from tests.support import a_record, an_order, an_order_costing, in_memory, signer_of


def _payments(tmp_path, **settings):
    return in_memory(create_payments, PaymentsSettings(store_url=f"sqlite:///{tmp_path / 'p'}.db", http_port=0, **settings))


async def _send(broker, record):
    await broker.publish(record.value, record.topic, key=record.key.encode(), headers=record.headers)


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


async def test_metrics_show_outcomes_by_topic_and_the_handler_histogram_after_in_memory_handling(tmp_path):
    app = _payments(tmp_path, default_limit_cents=1000)
    async with TestKafkaBroker(app.broker):
        await app.start()
        try:
            for record in (a_record(an_order_costing(500)), a_record(an_order_costing(700)), a_record(an_order_costing(5000))):
                await _send(app.broker, record)
            bad = a_record(an_order())
            await app.broker.publish(bad.value + b" ", bad.topic, key=bad.key.encode(), headers=bad.headers)  # bad signature
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.broker.worker_http.port}") as http:
                response = await http.get("/metrics")
        finally:
            await app.stop()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    topic = (("topic", "orders.placed.v1"),)
    assert samples[("eventfleet_events_received_total", topic)] == 4
    assert samples[("eventfleet_events_total", (("outcome", "handled"), *topic))] == 3
    assert samples[("eventfleet_events_total", (("outcome", "dead_lettered"), *topic))] == 1
    assert samples[("eventfleet_handler_duration_seconds_count", topic)] == 3
    assert samples[("eventfleet_handler_duration_seconds_bucket", (("le", "+Inf"), *topic))] == 3
    assert samples[("eventfleet_handler_duration_seconds_sum", topic)] > 0
    assert samples[("eventfleet_outbox_backlog", ())] >= 0  # the relay may not have published yet, but it is counted
    assert samples[("eventfleet_handler_oldest_in_flight_seconds", ())] == 0
    assert ("eventfleet_last_commit_timestamp_seconds", ()) in samples
    assert samples[("eventfleet_store_commit_seconds_count", ())] >= 1, "payments' batches committed its store"
    assert samples[("eventfleet_store_commit_seconds_sum", ())] > 0


async def test_metrics_carry_no_payload_key_material_or_record_identity(tmp_path):
    app = _payments(tmp_path)
    order = an_order(customer_id="cus-secretive-77", lines=(("SKU-UNIQUE-LABEL-9", 1, 4321),))
    record = a_record(order)
    async with TestKafkaBroker(app.broker):
        await app.start()
        try:
            await _send(app.broker, record)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.broker.worker_http.port}") as http:
                text = (await http.get("/metrics")).text
        finally:
            await app.stop()
    assert 'outcome="handled"' in text  # the record was handled, so there was something to leak
    storefront, payments = signer_of("storefront"), signer_of("payments")
    forbidden = [order.order_id, order.customer_id, "SKU-UNIQUE-LABEL-9", record.envelope.id, record.headers["ce_signature"],
                 storefront.kid, payments.kid, storefront.to_json()["secret"], payments.to_json()["secret"], "Bearer"]
    assert [word for word in forbidden if word in text] == []
    labels = {(name, value) for f in text_string_to_metric_families(text) for s in f.samples for name, value in s.labels.items()}
    assert {name for name, _ in labels} <= {"topic", "outcome", "le", "partition", "group"}
    assert {value for name, value in labels if name == "topic"} <= {t.name for t in REGISTRY.topics} | {t.retry_topic(n) for t in REGISTRY.topics for n in (1, 2, 3)}


async def test_probes_answer_with_their_reason_and_a_stuck_handler_fails_liveness(tmp_path):
    app = _payments(tmp_path, liveness_bound_s=30)
    async with TestKafkaBroker(app.broker):
        await app.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.broker.worker_http.port}") as http:
                live = await http.get("/health/live")
                ready = await http.get("/health/ready")  # the in-memory broker has no consumer, so nothing is assigned
                progress = app.broker.state.progress
                progress.in_flight["a handler"] = progress.clock() - 31
                stuck = await http.get("/health/live")
                progress.finished("a handler")
                recovered = await http.get("/health/live")
        finally:
            await app.stop()
    assert live.status_code == 200 and live.json()["status"] == "ok"
    assert ready.status_code == 503 and ready.json()["reason"] == "not_assigned"
    assert "orders.placed.v1" in ready.json()["detail"]
    assert stuck.status_code == 503 and stuck.json()["reason"] == "handler_stuck" and stuck.json()["oldest_in_flight_s"] >= 31
    assert recovered.status_code == 200


async def test_the_port_is_opened_at_start_and_closed_at_stop_never_at_creation(tmp_path):
    app = _payments(tmp_path)
    http = app.broker.worker_http
    assert http.port is None
    async with TestKafkaBroker(app.broker):
        await app.start()
        port = http.port
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        await app.stop()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        still_open = True
    except OSError:
        still_open = False
    assert not still_open


def test_a_busy_port_falls_back_to_a_free_one():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        sock = _bind("127.0.0.1", taken.getsockname()[1])
        try:
            assert sock.getsockname()[1] not in (0, taken.getsockname()[1])
        finally:
            sock.close()
    finally:
        taken.close()


async def test_a_successful_commit_sets_the_last_commit_time_and_a_failed_one_does_not():
    gauge = Gauge("t_last_commit", "test", registry=None)
    outcomes = [RuntimeError("broker gone"), None]

    class Consumer:  # what the committer uses of aiokafka's consumer
        async def commit(self, offsets):
            if (outcome := outcomes.pop(0)) is not None:
                raise outcome

    committer = OffsetCommitter(SimpleNamespace(consumer=Consumer()), committed=gauge.set_to_current_time)
    await committer.commit([SimpleNamespace(topic="orders.placed.v1", partition=0, offset=7)])  # refused: logged
    assert gauge._value.get() == 0
    await committer.commit([SimpleNamespace(topic="orders.placed.v1", partition=0, offset=8)])
    assert gauge._value.get() > 1_600_000_000


async def test_lag_is_highwater_minus_position_and_unknown_until_both_are_known():
    """Reads the partition state aiokafka keeps, as `highwater()` does: this fails if an aiokafka upgrade moves it."""
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id="g", enable_auto_commit=False)
    tp = TopicPartition("orders.placed.v1", 3)
    consumer.assign([tp])
    state = consumer._subscription.subscription.assignment.state_value(tp)
    try:
        assert lag_of(consumer, tp) is None  # no position yet: `await consumer.position(tp)` would wait here
        state.seek(40)
        assert lag_of(consumer, tp) is None  # no fetch yet, so no highwater
        state.highwater = 42
        assert lag_of(consumer, tp) == 2
        subscription = Subscription(RetryPolicy("g"), subscriber=SimpleNamespace(consumer=consumer, group_id="g"))
        retry_tier = Subscription(RetryPolicy("g", tier=1), subscriber=SimpleNamespace(consumer=None, group_id="g.retry.1"))
        broker = SimpleNamespace(subscriptions=[subscription, retry_tier])
        assert [(p.topic, p.partition, p.group, p.lag, p.main) for p in partition_lags(broker)] == [("orders.placed.v1", 3, "g", 2, True)]
        assert lag_of(consumer, TopicPartition("orders.placed.v1", 4)) is None  # not assigned
    finally:
        await consumer.stop()


def test_each_service_has_its_own_default_port_and_reads_it_under_its_prefix(monkeypatch):
    for service in ("PAYMENTS", "INVENTORY", "SHIPPING", "NOTIFICATIONS", "TRACKER"):
        monkeypatch.delenv(f"{service}_HTTP_PORT", raising=False)  # the test session gives every service a free port
    defaults = [cls().http_port for cls in (PaymentsSettings, InventorySettings, ShippingSettings, NotificationsSettings, TrackerSettings)]
    assert defaults == [8101, 8102, 8103, 8104, 8105]
    monkeypatch.setenv("PAYMENTS_HTTP_PORT", "0")
    monkeypatch.setenv("PAYMENTS_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("PAYMENTS_LIVENESS_BOUND_S", "7.5")
    monkeypatch.setenv("PAYMENTS_READINESS_LAG_THRESHOLD", "10")
    settings = PaymentsSettings()
    assert (settings.http_port, settings.http_host, settings.liveness_bound_s, settings.readiness_lag_threshold) == (0, "0.0.0.0", 7.5, 10)
    assert InventorySettings().http_port == 8102 and InventorySettings().liveness_bound_s == 120 and InventorySettings().readiness_lag_threshold == 1000


def test_a_port_lost_between_bind_and_listen_falls_back_too(monkeypatch):
    """Two replicas starting together may both bind (SO_REUSEADDR) and only one can listen: the other falls back."""
    import errno

    real_listen, calls = socket.socket.listen, []

    def listen(sock, *args):
        calls.append(sock.getsockname()[1])
        if len(calls) == 1:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return real_listen(sock, *args)

    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    monkeypatch.setattr(socket.socket, "listen", listen)
    sock = _bind("127.0.0.1", port)
    try:
        assert calls[0] == port and sock.getsockname()[1] not in (0, port)
    finally:
        sock.close()
