"""The `fleet` command on the real broker: topics, demo feed, one service as its own process, and the whole local fleet."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from contracts import REGISTRY, OrderPlaced, OrderPlacedV2, PaymentAuthorized, PaymentDeclined
from fleet.ops.demo import demo_orders
from tests.support import TopicReader, a_record, an_order, as_raw, end_offsets, fleet_up_until_an_order_is_through, produce_raw, start_group_at_end

ROOT = Path(__file__).resolve().parents[2]
FLEET = [sys.executable, "-m", "fleet"]


def fleet(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FLEET, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_every_command_has_help():
    for command in (["--help"], ["run", "--help"], ["topics", "apply", "--help"], ["demo", "--help"], ["watch", "--help"], ["up", "--help"], ["kafka", "start", "--help"], ["trace", "--help"]):
        result = fleet(*command)
        assert result.returncode == 0 and "Usage" in result.stdout, command


def test_an_unknown_service_is_a_clear_error():
    result = fleet("run", "billing")
    assert result.returncode != 0 and "unknown service 'billing'" in result.stderr


def test_topics_apply_is_idempotent(kafka):
    first, second = fleet("topics", "apply"), fleet("topics", "apply")
    assert first.returncode == second.returncode == 0
    expected = [f"{name}: unchanged" for t in REGISTRY for name in (t.name, *t.retry_topics, t.dead_letter_topic)]
    assert second.stdout.splitlines() == expected


async def test_demo_returns_once_the_broker_has_every_order(kafka):
    before = await end_offsets(kafka, ["orders.placed.v2"])  # the demo publishes the current version of an order
    result = fleet("demo", "--orders", "7", "--seed", "42")
    after = await end_offsets(kafka, ["orders.placed.v2"])
    assert result.returncode == 0 and "published 7 orders" in result.stdout
    assert sum(after.values()) - sum(before.values()) >= 7
    expected_ids = {o.order_id for o in demo_orders(7, seed=42)}
    async with TopicReader(kafka, [OrderPlacedV2], starts=before) as reader:
        seen = await reader.wait_for_keys(expected_ids, timeout_s=30)
    assert {s.key for s in seen} == expected_ids


async def test_a_service_runs_as_its_own_process_and_stops_cleanly_on_sigterm(kafka, group_id, tmp_path):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    log_path = tmp_path / "payments.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*FLEET, "run", "payments"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PAYMENTS_GROUP_ID": group_id, "FLEET_LOG_FORMAT": "json"})
    try:
        order = a_record(an_order(), correlation_id=f"flow-{group_id}")
        async with TopicReader(kafka, [PaymentAuthorized, PaymentDeclined]) as reader:
            await produce_raw(kafka, [as_raw(order)])
            [outcome] = await reader.wait_for_keys([order.key], timeout_s=90)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    handled = [line for line in lines if line.get("event") == "event_handled" and line.get("event_id") == order.envelope.id]
    assert handled and handled[0]["correlation_id"] == f"flow-{group_id}" and handled[0]["service"] == "payments"
    assert any("shut down gracefully" in line.get("event", "") for line in lines)


def test_the_local_fleet_shows_demo_orders_flowing_and_stops_on_ctrl_c(kafka):
    """What `make run` does: services as processes, demo orders, one readable line per event, Ctrl-C ends it all."""
    run = fleet_up_until_an_order_is_through(ROOT)
    assert run.returncode == 0, "\n".join(run.lines) + run.rest
    assert run.saw_an_order_through, "an order was seen placed, authorized and notified"
    assert "stopping" in run.rest and "replica_stopped" in run.rest
