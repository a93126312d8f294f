"""The gateway on the real broker: an order POSTed over HTTP lands signed on orders.placed.v1, and a missing broker is a 503, not a crash."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from contracts import OrderPlaced
from fleet.runtime.settings import KafkaSettings
from services.gateway import GatewaySettings, add_client
from tests.support import NotYet, TcpProxy, TopicReader, an_order, eventually, running_gateway, signer_of

ROOT = Path(__file__).resolve().parents[2]


def gateway_settings(tmp_path, bootstrap: str, **overrides) -> tuple[GatewaySettings, str]:
    """Settings with one client allowed to publish orders, and that client's token."""
    clients_file = tmp_path / "clients.json"
    token = add_client(clients_file, "acme", ["orders.placed.v1"])
    return GatewaySettings(clients_file=clients_file, kafka=KafkaSettings(bootstrap_servers=bootstrap), **overrides), token


async def post_order(http: httpx.AsyncClient, token: str, order: OrderPlaced, correlation_id: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} | ({"X-Correlation-Id": correlation_id} if correlation_id else {})
    return await http.post("/v1/events/orders.placed.v1", content=order.model_dump_json(), headers=headers)


async def test_a_posted_order_lands_signed_by_the_gateway_on_orders_placed(kafka, tmp_path):
    settings, token = gateway_settings(tmp_path, kafka)
    order = an_order()
    async with TopicReader(kafka, [OrderPlaced]) as reader:
        with running_gateway(settings) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                answer = await post_order(http, token, order, correlation_id="it-gateway-flow")
        assert answer.status_code == 202, answer.text
        [seen] = await reader.wait_for_keys([order.order_id], timeout_s=30)
    assert seen.event == order and seen.key == order.order_id
    assert seen.headers["ce_id"] == answer.json()["event_id"]
    assert seen.headers["ce_source"] == "/eventfleet/gateway"
    assert seen.headers["ce_keyid"] == signer_of("gateway").kid
    assert seen.headers["ce_correlationid"] == "it-gateway-flow" == answer.json()["correlation_id"]


async def test_without_a_broker_the_gateway_starts_answers_503_quickly_and_keeps_answering(tmp_path):
    settings, token = gateway_settings(tmp_path, "127.0.0.1:1", publish_timeout_s=2.0)  # nothing listens on port 1
    with running_gateway(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for attempt in range(2):
                started = time.monotonic()
                answer = await post_order(http, token, an_order())
                assert (answer.status_code, answer.json()["reason"]) == (503, "broker_unavailable"), attempt
                assert time.monotonic() - started < 5, "bounded by publish_timeout_s"
            assert (await http.get("/health")).status_code == 200


async def test_the_gateway_publishes_as_soon_as_the_broker_is_reachable_without_a_restart(kafka, tmp_path):
    host, port = kafka.rsplit(":", 1)
    broker_comes_back = TcpProxy(host, int(port))  # its port: the broker "comes back" at the address the gateway was given
    settings, token = gateway_settings(tmp_path, f"127.0.0.1:{broker_comes_back.port}", publish_timeout_s=2.0)
    order = an_order()
    with running_gateway(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert (await post_order(http, token, order)).status_code == 503, "nothing listens on the port yet"
            async with TopicReader(kafka, [OrderPlaced]) as reader, broker_comes_back:
                assert (await post_order(http, token, order)).status_code == 202, "the same gateway, now that the broker answers there"
                await reader.wait_for_keys([order.order_id], timeout_s=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SERVE_COMMANDS = {
    "fleet run gateway": lambda port: ["-m", "fleet", "run", "gateway"],
    # `fleet gateway serve` once fleet/cli.py registers the sub-command; the same Typer app, called directly meanwhile.
    "gateway serve": lambda port: ["-m", "fleet", "gateway", "serve", "--port", str(port)],
}


@pytest.mark.parametrize("command", SERVE_COMMANDS)
async def test_the_gateway_runs_as_its_own_process_and_stops_cleanly_on_sigterm(kafka, tmp_path, command):
    settings, token = gateway_settings(tmp_path, kafka)
    port = free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_CLIENTS_FILE": str(settings.clients_file),
           "FLEET_KAFKA_BOOTSTRAP_SERVERS": kafka, "FLEET_LOG_FORMAT": "json"}
    log_path = tmp_path / "gateway.log"
    order = an_order()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, *SERVE_COMMANDS[command](port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        async with TopicReader(kafka, [OrderPlaced]) as reader, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            await wait_until_healthy(http, process, log_path)
            answer = await post_order(http, token, order)
            assert answer.status_code == 202, answer.text
            await reader.wait_for_keys([order.order_id], timeout_s=30)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    logs = log_path.read_text()
    assert code == 0, logs
    assert '"event":"event_accepted"' in logs and token not in logs


async def wait_until_healthy(http: httpx.AsyncClient, process: subprocess.Popen, log_path: Path, timeout_s: float = 30) -> None:
    """Until the gateway answers /health; fails at once if it exits, and with its log either way."""

    async def healthy():
        assert process.poll() is None, f"the gateway exited: {log_path.read_text()}"
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            if (await http.get("/health")).status_code == 200:
                return True
        return NotYet(log_path.read_text())

    await eventually(healthy, "the gateway to answer /health", timeout_s=timeout_s)
