"""Publishing while orders.placed.v1 is not retired, on the real broker: `fleet publish`, the contracts Publisher and the
gateway put v1 and v2 orders each on its own topic, signed, and payments decides both."""

import asyncio
import os
import time
from pathlib import Path

import httpx

from contracts import REGISTRY, OrderPlaced, OrderPlacedV2, PaymentAuthorized, verify_record
from contracts.publisher import Publisher
from fleet.runtime.keys import KeyStore, keyring_path
from fleet.runtime.settings import KafkaSettings
from services.gateway import GatewaySettings
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import (
    RunningApps,
    TopicReader,
    an_order,
    an_order_v2,
    run_fleet,
    running_gateway,
    signer_of,
    start_group_at_end,
)

REPO = Path(__file__).resolve().parents[2]
V1, V2 = REGISTRY.of(OrderPlaced), REGISTRY.of(OrderPlacedV2)


def _verified(seen, keys_dir: Path):
    keyring = KeyStore(keyring_path(keys_dir)).keyring()
    raw_headers = [(k, v.encode()) for k, v in seen.headers.items()]
    return verify_record(seen.topic, seen.key.encode(), seen.value, raw_headers, int(time.time() * 1000), keyring)


async def test_fleet_publish_publishes_a_v1_and_a_v2_order_each_on_its_own_topic(kafka, keys_dir):
    old, new = an_order(), an_order_v2(channel="phone")
    async with TopicReader(kafka, [OrderPlaced, OrderPlacedV2]) as reader:
        results = [
            await asyncio.to_thread(run_fleet, "publish", topic.name, "--json", order.model_dump_json(),
                                    "--correlation-id", f"cli-{topic.version}", cwd=REPO, env=dict(os.environ), timeout_s=120)
            for topic, order in ((V1, old), (V2, new))
        ]
        for result in results:
            assert result.returncode == 0, result.stderr
        seen = {s.key: s for s in await reader.wait_for_keys([old.order_id, new.order_id])}
    for topic, order, result in ((V1, old, results[0]), (V2, new, results[1])):
        record = seen[order.order_id]
        assert (record.topic, record.event) == (topic.name, order)
        assert record.headers["ce_id"] == result.stdout.split()[0]
        assert record.headers["ce_type"] == topic.type_name and record.headers["ce_correlationid"] == f"cli-{topic.version}"
        envelope = _verified(record, keys_dir)
        assert envelope.source == "/eventfleet/storefront"


def test_fleet_publish_refuses_a_v1_body_on_orders_placed_v2_naming_the_channel():
    result = run_fleet("publish", V2.name, "--json", an_order().model_dump_json(), cwd=REPO, env=dict(os.environ), timeout_s=60)
    assert result.returncode != 0 and "OrderPlacedV2" in result.stderr and "channel" in result.stderr


async def test_the_contracts_publisher_publishes_v1_and_v2_orders(kafka, keys_dir):
    old, new = an_order(), an_order_v2(channel="store")
    async with TopicReader(kafka, [OrderPlaced, OrderPlacedV2]) as reader:
        async with Publisher(kafka, service="storefront", signer=signer_of("storefront")) as publisher:
            sent = [await publisher.publish(old), await publisher.publish(new)]
        seen = {s.key: s for s in await reader.wait_for_keys([old.order_id, new.order_id])}
    assert [(seen[o.order_id].topic, seen[o.order_id].event) for o in (old, new)] == [(V1.name, old), (V2.name, new)]
    assert [seen[o.order_id].headers["ce_id"] for o in (old, new)] == [e.id for e in sent]
    assert [e.type for e in sent] == [V1.type_name, V2.type_name]
    for order in (old, new):
        _verified(seen[order.order_id], keys_dir)


async def test_a_client_added_for_v2_posts_v2_orders_to_the_gateway_and_payments_decides_them_with_v1_ones(kafka, group_id, tmp_path):
    clients_file = tmp_path / "clients.json"
    added = run_fleet("gateway", "add-client", "storefront", "--topic", V2.name, "--topic", V1.name,
                      "--clients-file", str(clients_file), cwd=REPO, env=dict(os.environ), timeout_s=60)
    assert added.returncode == 0, added.stderr
    assert "warning" not in added.stderr, "the gateway's key may sign both versions"
    token = added.stdout.strip().splitlines()[-1]
    settings = GatewaySettings(clients_file=clients_file, kafka=KafkaSettings(bootstrap_servers=kafka))
    await start_group_at_end(kafka, group_id, [OrderPlacedV2])
    payments = create_payments(PaymentsSettings(group_id=group_id, store_url=f"sqlite:///{tmp_path / 'p.db'}",
                                                kafka=KafkaSettings(bootstrap_servers=kafka)))
    new, old = an_order_v2(channel="store"), an_order()
    async with RunningApps(payments), TopicReader(kafka, [OrderPlaced, OrderPlacedV2, PaymentAuthorized]) as reader:
        with running_gateway(settings) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                answers = [await http.post(f"/v1/events/{topic.name}", content=order.model_dump_json(),
                                           headers={"Authorization": f"Bearer {token}"})
                           for topic, order in ((V2, new), (V1, old))]
        for answer in answers:
            assert answer.status_code == 202, answer.text
        seen = await reader.wait_for_keys([new.order_id, old.order_id], per_key=2)
    placed = {s.key: s for s in seen if s.topic in (V1.name, V2.name)}
    assert (placed[new.order_id].topic, placed[new.order_id].event) == (V2.name, new)
    assert (placed[old.order_id].topic, placed[old.order_id].event) == (V1.name, old)
    assert {s.headers["ce_source"] for s in placed.values()} == {"/eventfleet/gateway"}
    assert [answer.json()["topic"] for answer in answers] == [V2.name, V1.name]
    decided = {s.key: s for s in seen if s.topic == "payments.authorized.v1"}
    assert set(decided) == {new.order_id, old.order_id}
    assert decided[new.order_id].headers["ce_causationid"] == answers[0].json()["event_id"]
    assert decided[old.order_id].headers["ce_causationid"] == answers[1].json()["event_id"]
