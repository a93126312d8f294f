"""Keys on the real broker: rotation under traffic loses nothing, a newly trusted key works without a restart,
and `fleet publish` validates, signs and publishes."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from contracts import NotificationSent, OrderPlaced, PaymentAuthorized, PaymentDeclined, PrivateKey, verify_record
from fleet.runtime.keys import KeyStore, keyring_path
from fleet.runtime.settings import KafkaSettings
from services.notifications import NotificationsSettings
from services.notifications import create_app as create_notifications
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import RunningApps, TopicReader, a_record, an_order, as_raw, produce_raw, signer_of, start_group_at_end

ROOT = Path(__file__).resolve().parents[2]
OUTCOMES = (PaymentAuthorized, PaymentDeclined)


def fleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


async def test_rotating_a_services_key_under_traffic_loses_nothing_and_switches_keys(kafka, group_id, tmp_path):
    await start_group_at_end(kafka, f"{group_id}-pay", [OrderPlaced])
    await start_group_at_end(kafka, f"{group_id}-ntf", [*OUTCOMES, OrderPlaced])  # notifications read the orders too (their channel)
    old_kid = signer_of("payments").kid
    payments = create_payments(PaymentsSettings(group_id=f"{group_id}-pay", kafka=KafkaSettings(bootstrap_servers=kafka)))
    notifications = create_notifications(NotificationsSettings(group_id=f"{group_id}-ntf", outbox_path=tmp_path / "o.jsonl",
                                                               kafka=KafkaSettings(bootstrap_servers=kafka)))
    orders = [a_record(an_order()) for _ in range(30)]
    async with RunningApps(payments, notifications), TopicReader(kafka, [*OUTCOMES, NotificationSent],
                                                                 raw_topics=["payments.authorized.v1.dlq", "payments.declined.v1.dlq"]) as reader:
        for n, order in enumerate(orders):
            if n == 5:
                rotated = await asyncio.to_thread(fleet, "keys", "rotate", "payments", "--warmup-s", "2", "--grace-hours", "1")
                assert rotated.returncode == 0, rotated.stderr
            await produce_raw(kafka, [as_raw(order)])
            await asyncio.sleep(0.2)
        seen = await reader.wait_for_keys([o.key for o in orders], per_key=2, timeout_s=90)
    new_kid = signer_of("payments").kid
    assert new_kid != old_kid
    outcomes = sorted((s for s in seen if isinstance(s.event, OUTCOMES)), key=lambda s: s.headers["ce_time"])
    kids = [s.headers["ce_keyid"] for s in outcomes]
    assert kids[0] == old_kid and kids[-1] == new_kid, "signed by the old key first, by the new one after the warm-up"
    assert kids == sorted(kids, key=lambda k: k == new_kid), "once switched, never back"
    assert len([s for s in seen if isinstance(s.event, NotificationSent)]) == len(orders), "notifications verified both keys"
    assert not [s for s in reader.seen if s.topic.endswith(".dlq") and s.headers.get("dlq-group") == f"{group_id}-ntf"]


async def test_a_newly_trusted_key_is_accepted_by_a_running_worker_without_a_restart(kafka, group_id, keys_dir, tmp_path):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    partner = PrivateKey.generate(f"partner-ed-{os.getpid()}-{int(time.time())}")
    pem = tmp_path / "partner.pem"
    pem.write_text(partner.public_pem())
    payments = create_payments(PaymentsSettings(group_id=group_id, kafka=KafkaSettings(bootstrap_servers=kafka)))
    async with RunningApps(payments), TopicReader(kafka, OUTCOMES) as reader:
        trusted = await asyncio.to_thread(fleet, "keys", "trust", "--kid", partner.kid, "--alg", "ed25519", "--public-key", str(pem), "--topic", "orders.placed.v1")
        assert trusted.returncode == 0, trusted.stderr
        await asyncio.sleep(float(os.environ["FLEET_KEYS_RELOAD_EVERY_S"]) + 0.5)  # the reload bound (default 2 s, within 10 s)
        record = a_record(an_order(), signer=partner)
        await produce_raw(kafka, [as_raw(record)])
        [outcome] = await reader.wait_for_keys([record.key])
    assert outcome.headers["ce_causationid"] == record.envelope.id
    public = fleet("keys", "public", partner.kid)
    assert public.returncode == 0 and public.stdout.strip() == partner.public_pem().strip()


async def test_fleet_publish_signs_and_publishes_a_valid_event_and_prints_its_id(kafka, keys_dir):
    order = an_order()
    async with TopicReader(kafka, [OrderPlaced]) as reader:
        result = await asyncio.to_thread(fleet, "publish", "orders.placed.v1", "--json", order.model_dump_json(), "--correlation-id", "flow-cli")
        assert result.returncode == 0, result.stderr
        [seen] = await reader.wait_for_keys([order.order_id])
    event_id = result.stdout.split()[0]
    assert seen.headers["ce_id"] == event_id and seen.headers["ce_correlationid"] == "flow-cli"
    assert seen.event == order
    keyring = KeyStore(keyring_path(keys_dir)).keyring()
    raw_headers = [(k, v.encode()) for k, v in seen.headers.items()]
    verify_record("orders.placed.v1", seen.key.encode(), seen.value, raw_headers, int(time.time() * 1000), keyring)


def test_fleet_publish_prints_every_validation_error_and_fails():
    result = fleet("publish", "orders.placed.v1", "--json", json.dumps({"order_id": "o-1", "items": [], "currency": "eu"}))
    assert result.returncode != 0
    for field in ("customer_id", "items", "currency", "total_cents", "placed_at"):
        assert field in result.stderr


def test_fleet_publish_refuses_an_unknown_topic_and_names_the_known_ones():
    result = fleet("publish", "orders.placed.v9", "--json", "{}")
    assert result.returncode != 0 and "orders.placed.v1" in result.stderr
