"""The secure broker (TLS, SASL/SCRAM-SHA-512, ACLs): every service works as its own user; Kafka refuses whatever lies
outside a service's ACLs, and the worker says so once and stops instead of retrying; a wrong password fails fast and
clearly, and never shows up in a log."""

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import httpx
import pytest
from aiokafka import TopicPartition

from contracts import NotificationSent, OrderPlaced, ShipmentScheduled, StockReceived
from contracts.publisher import Publisher
from fleet.runtime.access import EXIT_ACCESS_DENIED, KafkaAccessDenied, authenticate
from fleet.ops.acls import Acl, apply_acls, fleet_users
from fleet.runtime.broker import create_broker, publisher_for, subscriber_for
from fleet.local.scram import scram_users
from services.gateway import GatewaySettings, add_client
from services.inventory import InventorySettings
from services.inventory import create_app as create_inventory
from services.notifications import NotificationsSettings
from services.notifications import create_app as create_notifications
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from services.shipping import ShippingSettings
from services.shipping import create_app as create_shipping
from services.tracker import TrackerSettings
from services.tracker import create_app as create_tracker
from tests.support import (
    BrokerOnly,
    RunningApps,
    TopicReader,
    an_order,
    committed_offsets,
    fleet_up_until_an_order_is_through,
    running_gateway,
    signer_of,
)

from .conftest import REPO

SKU = "SKU-TEA-001"


def _fleet(secure_kafka, tmp_path):
    """The five workers, each logging in as its own service (the user name is the service's, the password its file)."""
    kafka = secure_kafka.settings()
    store = lambda name: f"sqlite:///{tmp_path / name}.db"  # noqa: E731
    return (
        create_payments(PaymentsSettings(kafka=kafka, store_url=store("payments"))),
        create_inventory(InventorySettings(kafka=kafka, store_url=store("inventory"))),
        create_shipping(ShippingSettings(kafka=kafka, store_url=store("shipping"))),
        create_notifications(NotificationsSettings(kafka=kafka, store_url=store("notifications"), outbox_path=tmp_path / "mail.jsonl")),
        create_tracker(TrackerSettings(kafka=kafka, store_url=store("tracker"))),
    )


async def _tracker_has_read(admin, topic: str, count: int, timeout_s: float = 60.0) -> int:
    for _ in range(int(timeout_s / 0.5)):
        read = sum(offset for tp, offset in (await committed_offsets(admin, "tracker")).items() if tp.topic == topic)
        if read >= count:
            return read
        await asyncio.sleep(0.5)
    return read


async def test_every_service_works_over_tls_as_its_own_user_and_upstream_systems_publish_as_theirs(secure_kafka, tmp_path):
    orders = [an_order(lines=((SKU, 1, 900),)) for _ in range(3)]
    stock = StockReceived(receipt_id=f"rcpt-secure-{orders[0].order_id}", sku=SKU, quantity=10, received_at=datetime.now(timezone.utc))
    async with RunningApps(*_fleet(secure_kafka, tmp_path)), \
            TopicReader(secure_kafka.admin, [ShipmentScheduled, NotificationSent]) as reader:
        async with Publisher(secure_kafka.as_user("warehouse"), service="warehouse", signer=signer_of("warehouse")) as warehouse:
            await warehouse.publish(stock)
        await asyncio.sleep(1)  # inventory takes the delivery before the orders arrive (else they would be backordered)
        async with Publisher(secure_kafka.as_user("storefront"), service="storefront", signer=signer_of("storefront")) as shop:
            await shop.publish_many(orders)

        def shipped_and_notified(seen) -> bool:
            shipped = {s.key for s in seen if isinstance(s.event, ShipmentScheduled)}
            notified = {s.key for s in seen if isinstance(s.event, NotificationSent)}
            return {o.order_id for o in orders} <= shipped & notified

        seen = await reader.wait_for(shipped_and_notified, timeout_s=90)
        tracked = await _tracker_has_read(secure_kafka.admin, "shipments.scheduled.v1", len(orders))
    sources = {s.headers["ce_source"] for s in seen if s.key in {o.order_id for o in orders}}
    assert sources == {"/eventfleet/shipping", "/eventfleet/notifications"}
    assert tracked >= len(orders), "the tracker read every shipment as its own user, in its own group"


async def test_the_gateway_publishes_an_order_as_its_own_user(secure_kafka, tmp_path):
    token = add_client(tmp_path / "clients.json", "acme", ["orders.placed.v1"])
    settings = GatewaySettings(clients_file=tmp_path / "clients.json", kafka=secure_kafka.settings())
    order = an_order()
    async with TopicReader(secure_kafka.admin, [OrderPlaced]) as reader:
        with running_gateway(settings) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                answer = await http.post("/v1/events/orders.placed.v1", content=order.model_dump_json(),
                                         headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 202, answer.text
        [seen] = await reader.wait_for_keys([order.order_id], timeout_s=30)
    assert seen.headers["ce_source"] == "/eventfleet/gateway"


async def _refused_at_start(broker) -> KafkaAccessDenied:
    try:
        with pytest.raises(KafkaAccessDenied) as refused:
            await asyncio.wait_for(broker.start(), 60)  # bounded: a retry loop would hang here, not pass
    finally:
        await broker.stop()
    assert broker.state.denials.first is refused.value, "reported once, as the worker's first refusal"
    return refused.value


async def test_a_service_that_subscribes_to_another_services_input_is_refused_at_start(secure_kafka):
    broker = create_broker("payments", secure_kafka.settings())

    async def on_shipment_scheduled(shipment: ShipmentScheduled) -> None:
        raise AssertionError("payments must never read shipments")

    subscriber_for(broker, ShipmentScheduled, group_id="payments")(on_shipment_scheduled)
    refusal = await _refused_at_start(broker)
    assert (refusal.kind, refusal.who) == ("topic", "User:payments")
    assert "shipments.scheduled.v1" in refusal.resource and "fleet acl apply" in str(refusal)


async def test_a_service_that_joins_another_services_group_is_refused_at_start(secure_kafka):
    broker = create_broker("payments", secure_kafka.settings())

    async def on_order_placed(order: OrderPlaced) -> None:
        raise AssertionError("not in inventory's group")

    subscriber_for(broker, OrderPlaced, group_id="inventory")(on_order_placed)
    refusal = await _refused_at_start(broker)
    assert (refusal.kind, refusal.who) == ("group", "User:payments") and refusal.resource.startswith("inventory")


async def test_a_handler_that_writes_a_topic_its_service_does_not_own_stops_the_worker_and_its_record_waits(secure_kafka):
    """payments may read orders.placed.v1 but not write it: the refusal is reported once, the worker is told to stop,
    and the order's offset is not committed past (it is handled again once an operator fixes the wiring or the ACL)."""
    broker = create_broker("payments", secure_kafka.settings())
    to_order_placed = publisher_for(broker, OrderPlaced)  # a miswired publisher: orders belong to the storefront
    stopped = asyncio.Event()
    broker.state.stop_worker = stopped.set

    async def on_order_placed(order: OrderPlaced) -> None:
        await to_order_placed.emit(an_order())

    subscriber_for(broker, OrderPlaced, group_id="payments")(on_order_placed)
    order = an_order()
    async with TopicReader(secure_kafka.admin, [OrderPlaced]) as reader, RunningApps(BrokerOnly(broker)):
        async with Publisher(secure_kafka.as_user("storefront"), service="storefront", signer=signer_of("storefront")) as shop:
            await shop.publish(order)
        [placed] = await reader.wait_for_keys([order.order_id], timeout_s=30)
        await asyncio.wait_for(stopped.wait(), 60)
    refusal = broker.state.denials.first
    assert (refusal.kind, refusal.who, refusal.resource) == ("topic", "User:payments", "orders.placed.v1")
    # Only this order's partition counts: the group may also have read (and committed) other tests' orders elsewhere,
    # and a partition it never committed starts again from its beginning.
    committed = (await committed_offsets(secure_kafka.admin, "payments")).get(TopicPartition(placed.topic, placed.partition), 0)
    assert committed <= placed.offset, f"the refused order (offset {placed.offset}) was committed past: {committed}"


def test_a_worker_with_a_wrong_password_exits_at_once_with_a_clear_line_and_no_password(secure_kafka, tmp_path):
    wrong = "not-the-password-" + os.urandom(4).hex()
    env = os.environ | {k: str(v) for k, v in {
        "FLEET_KAFKA_BOOTSTRAP_SERVERS": secure_kafka.admin.bootstrap_servers, "FLEET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FLEET_KAFKA_SSL_CAFILE": secure_kafka.home / "secure" / "ca.pem", "FLEET_KAFKA_SASL_PASSWORD": wrong,
        "FLEET_LOG_FORMAT": "json", "PAYMENTS_STORE_URL": f"sqlite:///{tmp_path / 'payments.db'}",
    }.items()}
    run = subprocess.run([sys.executable, "-m", "fleet", "run", "payments"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == EXIT_ACCESS_DENIED, output[-3000:]
    assert '"event": "kafka_access_denied"' in output or '"event":"kafka_access_denied"' in output, output[-3000:]
    assert "wrong password or unknown user 'payments'" in output
    assert wrong not in output and secure_kafka.password_of("payments") not in output
    assert "Traceback" not in output


def test_the_cli_names_a_refused_password_and_exits_78(secure_kafka):
    env = os.environ | {"FLEET_KAFKA_BOOTSTRAP_SERVERS": secure_kafka.admin.bootstrap_servers,
                        "FLEET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FLEET_KAFKA_SSL_CAFILE": str(secure_kafka.home / "secure" / "ca.pem"),
                        "FLEET_KAFKA_SASL_PASSWORD": "guess"}
    run = subprocess.run([sys.executable, "-m", "fleet", "topics", "apply", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == EXIT_ACCESS_DENIED, run.stdout + run.stderr
    assert "Kafka refused User:admin" in run.stderr and "wrong password" in run.stderr and "Traceback" not in run.stderr


async def test_acl_apply_removes_what_a_user_no_longer_needs_and_leaves_other_principals_alone(secure_kafka):
    extra = Acl("User:payments", "TOPIC", "shipments.scheduled.v1", "READ")
    outsider = Acl("User:auditor", "TOPIC", "orders.placed.v1", "DESCRIBE")
    from fleet.ops.acls import fleet_acls, fleet_users
    from fleet.docs.governance import service_wiring

    desired = fleet_acls(service_wiring())
    await apply_acls(secure_kafka.admin, [*desired, extra, outsider], [*fleet_users(), "auditor"])
    preview = await apply_acls(secure_kafka.admin, desired, fleet_users(), dry_run=True)
    assert preview.remove == (extra,) and preview.add == ()
    done = await apply_acls(secure_kafka.admin, desired, fleet_users())
    assert done.remove == (extra,)
    again = await apply_acls(secure_kafka.admin, desired, [*fleet_users(), "auditor"], dry_run=True)
    assert again.remove == (outsider,) and again.add == (), "the auditor's ACL was left alone by the fleet's apply"
    await apply_acls(secure_kafka.admin, desired, [*fleet_users(), "auditor"])


async def test_an_acl_revoked_while_a_worker_runs_is_reported_once_and_stops_it(secure_kafka, tmp_path):
    from fleet.ops.acls import fleet_acls, fleet_users
    from fleet.docs.governance import service_wiring

    desired = fleet_acls(service_wiring())
    revoked = [a for a in desired if a != Acl("User:payments", "TOPIC", "orders.placed.v1", "READ")]
    app = create_payments(PaymentsSettings(kafka=secure_kafka.settings(), store_url=f"sqlite:///{tmp_path / 'payments.db'}"))
    stopped = asyncio.Event()
    app.broker.state.stop_worker = stopped.set
    async with RunningApps(app):
        await apply_acls(secure_kafka.admin, revoked, fleet_users())
        try:
            await asyncio.wait_for(stopped.wait(), 60)  # bounded: FastStream alone would log and retry every 5 s, forever
        finally:
            await apply_acls(secure_kafka.admin, desired, fleet_users())
    refusal = app.broker.state.denials.first
    assert (refusal.kind, refusal.who) == ("topic", "User:payments") and "orders.placed.v1" in refusal.resource


async def test_a_user_given_a_password_file_after_the_format_can_log_in_once_the_launcher_runs_again(secure_kafka):
    """Only admin is stored when the storage is formatted; every other user (a service added later too) gets its SCRAM
    credential from the launcher, on the running broker, with no password on any command line."""
    assert set(fleet_users()) <= await scram_users(secure_kafka.admin)
    newcomer = secure_kafka.home / "secure" / "credentials" / "auditor.password"
    newcomer.write_text("auditor-" + os.urandom(8).hex() + "\n")
    try:
        auditor = secure_kafka.as_user("auditor")
        with pytest.raises(KafkaAccessDenied):
            await authenticate(auditor)
        assert "SCRAM users added: auditor" in await asyncio.to_thread(secure_kafka.start_again)
        await authenticate(auditor)  # raises if the login is refused
        with pytest.raises(KafkaAccessDenied):
            await authenticate(auditor.as_user("auditor", "not-its-password"))
        assert "SCRAM users added" not in await asyncio.to_thread(secure_kafka.start_again), "an existing user keeps its credential"
    finally:
        newcomer.unlink()


def test_make_run_secure_runs_the_demo_with_each_worker_logged_in_as_its_service(secure_kafka, tmp_path):
    """`fleet up --demo` on the secure broker, as `make run-secure` runs it (state, keys and stores in a folder of its
    own): it applies the ACLs, every worker process logs in as its service from the credentials folder, an order is seen
    placed, authorized and notified, and no process was refused anything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_KAFKA_")} | secure_kafka.launcher_env()
    run = fleet_up_until_an_order_is_through(tmp_path, env)
    assert run.returncode == 0 and run.saw_an_order_through, "\n".join(run.lines) + run.rest
    assert any(line.startswith("acls:") for line in run.lines), "\n".join(run.lines)
    logs = {log.stem: log.read_text() for log in (tmp_path / ".fleet" / "logs").glob("*.log")}
    assert {"payments-1", "inventory-1", "shipping-1", "notifications-1", "tracker-1"} <= set(logs), sorted(logs)
    for replica, text in logs.items():  # as its own user, never as the operators' admin
        entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]  # Python's own warnings are not JSON
        logins = [entry.get("principal") for entry in entries if entry.get("event") == "kafka_logged_in"]
        assert logins == [f"User:{replica.rsplit('-', 1)[0]}"], f"{replica}: {logins}\n{text[-2000:]}"
    refused = [name for name, text in logs.items() if "kafka_access_denied" in text]
    assert not refused and "kafka_access_denied" not in run.rest, refused
