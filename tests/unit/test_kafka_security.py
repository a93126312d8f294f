"""Connection settings, ACL plans, the secure broker's config and refusals, without a broker: passwords never print,
an ACL apply touches only the fleet's users, and a refusal is one clear error instead of a retry."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import orjson
import pytest
from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError, SaslAuthenticationFailed, TopicAuthorizationFailedError

from contracts.connection import ConnectionSettingsError, KafkaConnection
from fleet.local import kafka as kafka_local
from fleet.runtime.access import EXIT_ACCESS_DENIED, Denials, denial_of
from fleet.ops.acls import Acl, fleet_acls, fleet_users, gateway_acls, plan_acls, upstream_acls
from fleet.docs.governance import service_wiring
from fleet.runtime.settings import KafkaSettings
from fleet.ops.supervisor import Supervisor
from fleet.local.tls import make_local_tls
from tests.support import properties

SECRET = "s3cr3t-Pa55word"


def a_secure_connection(tmp_path, user="payments") -> KafkaConnection:
    return KafkaConnection("127.0.0.1:9094", "SASL_SSL", user, SECRET, ssl_cafile=make_local_tls(tmp_path / "tls").ca_cert)


def test_a_password_never_prints_in_repr_str_or_a_json_log_line(tmp_path):
    connection = a_secure_connection(tmp_path)
    rendered = [repr(connection), str(connection), f"{connection}", orjson.dumps({"c": connection}, default=str).decode(),
                repr(connection.password), json.dumps(orjson.loads(orjson.dumps(connection, default=str)))]
    assert all(SECRET not in text for text in rendered), rendered
    assert connection.aiokafka_options()["sasl_plain_password"] == SECRET  # only the client gets it


def test_the_password_comes_from_the_setting_then_its_file_then_the_credentials_folder(tmp_path):
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "payments.password").write_text("from-folder\n")
    (tmp_path / "file").write_text("from-file\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    base = {"FLEET_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "FLEET_KAFKA_SSL_CAFILE": str(ca), "FLEET_KAFKA_CREDENTIALS_DIR": str(tmp_path / "creds")}
    read = lambda **env: KafkaConnection.from_env(username="payments", environ=base | env).password.reveal()  # noqa: E731
    assert read() == "from-folder"
    assert read(FLEET_KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "file")) == "from-file"
    assert read(FLEET_KAFKA_SASL_PASSWORD="direct", FLEET_KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "file")) == "direct"
    assert KafkaConnection.from_env(environ=base | {"FLEET_KAFKA_SASL_USERNAME": "payments"}).username == "payments"


def test_a_worker_logs_in_as_its_service_unless_told_otherwise(tmp_path, monkeypatch):
    (tmp_path / "shipping.password").write_text("pw-shipping")
    (tmp_path / "ca.pem").write_text("x")
    for name in ("SASL_USERNAME", "SASL_PASSWORD", "SASL_PASSWORD_FILE"):
        monkeypatch.delenv(f"FLEET_KAFKA_{name}", raising=False)
    settings = KafkaSettings(security_protocol="SASL_SSL", credentials_dir=tmp_path, ssl_cafile=tmp_path / "ca.pem")
    connection = settings.connection("shipping")
    assert (connection.principal, connection.password.reveal()) == ("User:shipping", "pw-shipping")
    assert KafkaSettings().connection("shipping").principal is None, "plaintext: no SASL user at all"


@pytest.mark.parametrize("settings, complaint", [
    ({"security_protocol": "SASL_SSL", "username": None, "password": "x"}, "needs a username"),
    ({"security_protocol": "SASL_SSL", "username": "payments", "password": None}, "needs a password for 'payments'"),
    ({"security_protocol": "TLS"}, "not one of PLAINTEXT, SSL, SASL_SSL"),
])
def test_incomplete_settings_say_which_setting_to_fix(settings, complaint):
    with pytest.raises(ConnectionSettingsError, match=complaint):
        KafkaConnection("127.0.0.1:9094", **settings)


def test_a_missing_password_file_is_named_not_a_traceback_from_deep_inside(tmp_path):
    with pytest.raises(ConnectionSettingsError, match=r"cannot read the Kafka password of 'payments' from .*/nope"):
        KafkaConnection.from_env(username="payments", environ={"FLEET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                                               "FLEET_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "nope")})


def test_an_apply_adds_what_is_missing_and_removes_only_the_fleet_users_extras():
    want = [Acl("User:payments", "GROUP", "payments", "READ"), Acl("User:payments", "TOPIC", "orders.placed.v1", "READ")]
    have = [want[0], Acl("User:payments", "TOPIC", "shipments.scheduled.v1", "READ"), Acl("User:auditor", "TOPIC", "orders.placed.v1", "DESCRIBE")]
    plan = plan_acls(want, have, ["payments", "inventory"])
    assert plan.add == (want[1],) and plan.keep == (want[0],)
    assert plan.remove == (Acl("User:payments", "TOPIC", "shipments.scheduled.v1", "READ"),), "the auditor's ACL stays"


def test_upstream_systems_and_the_gateway_may_write_only_upstream_topics():
    assert {a.resource for a in upstream_acls("storefront") if a.resource_type == "TOPIC"} == {"orders.placed.v1", "orders.placed.v2"}
    gateway_topics = {a.resource for a in gateway_acls() if a.resource_type == "TOPIC"}
    assert gateway_topics == {"orders.placed.v1", "orders.placed.v2", "warehouse.stock_received.v1"}
    assert all(a.operation in ("WRITE", "DESCRIBE", "IDEMPOTENT_WRITE") for a in gateway_acls() | upstream_acls("warehouse"))


def test_every_user_of_the_fleet_has_acls_and_no_user_gets_more_than_it_uses():
    acls = fleet_acls(service_wiring())
    assert {a.principal for a in acls} == {f"User:{u}" for u in fleet_users()}
    assert not any(a.operation in ("ALL", "ALTER", "CREATE", "DELETE", "ALTER_CONFIGS", "CLUSTER_ACTION") for a in acls)


def test_a_refusal_names_the_principal_the_resource_and_the_way_out(tmp_path):
    connection = a_secure_connection(tmp_path)
    topic = denial_of(TopicAuthorizationFailedError("inventory.reserved.v1"), connection, "consuming")
    assert (topic.kind, topic.who, topic.resource) == ("topic", "User:payments", "inventory.reserved.v1")
    assert "fleet acl apply" in str(topic)
    group = denial_of(GroupAuthorizationFailedError("shipping"), connection, "joining")
    assert (group.kind, group.resource) == ("group", "shipping")
    login = denial_of(SaslAuthenticationFailed("invalid credentials"), connection, "login")
    assert login.kind == "authentication" and "wrong password" in str(login) and SECRET not in str(login)
    assert denial_of(KafkaConnectionError("broker down"), connection, "x") is None, "a broker that is down is not a refusal"


def test_a_worker_reports_its_first_refusal_once_and_is_told_to_stop(tmp_path, caplog):
    stops = []
    denials = Denials(on_first=lambda: stops.append(True))
    connection = a_secure_connection(tmp_path)
    first = denial_of(TopicAuthorizationFailedError("orders.placed.v1"), connection, "publishing")
    denials.report(first)
    denials.report(denial_of(GroupAuthorizationFailedError("payments"), connection, "consuming"))
    assert denials.first is first and stops == [True]


def test_the_secure_broker_listens_only_with_tls_and_scram_and_denies_what_no_acl_allows(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_KAFKA_HOME", str(tmp_path))
    monkeypatch.setenv("FLEET_KAFKA_PORT", "19992")
    monkeypatch.setenv("FLEET_KAFKA_CONTROLLER_PORT", "19993")
    kafka_local._ensure_secure_files(tmp_path, fleet_users())
    last = properties(kafka_local.render_server_properties(tmp_path))  # the secure lines come last, and win
    assert last["listeners"] == "SASL_SSL://127.0.0.1:19992,CONTROLLER://127.0.0.1:19993"
    assert last["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert last["listener.name.controller.ssl.client.auth"] == "required"
    assert last["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert last["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert last["allow.everyone.if.no.acl.found"] == "false"
    assert last["super.users"] == "User:admin;User:CN=127.0.0.1,O=eventfleet local"
    credentials = tmp_path / "secure" / "credentials"
    assert sorted(p.stem for p in credentials.glob("*.password")) == sorted(["admin", *fleet_users()])
    assert all(p.stat().st_mode & 0o077 == 0 for p in credentials.iterdir()), "passwords readable by their owner only"
    env = (tmp_path / "secure" / "fleet.env").read_text()
    assert "FLEET_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in env
    assert not any(p.read_text().strip() in env for p in credentials.iterdir()), "fleet.env names the folder, not passwords"


def test_a_replica_refused_by_kafka_is_not_restarted(tmp_path, monkeypatch):
    class RefusedSupervisor(Supervisor):
        spawned = 0

        async def _spawn(self, replica):
            RefusedSupervisor.spawned += 1
            replica.process = await asyncio.create_subprocess_exec(sys.executable, "-c", f"raise SystemExit({EXIT_ACCESS_DENIED})")
            replica.status = "up"

    async def scenario():
        supervisor = RefusedSupervisor(["payments"], state_dir=tmp_path, grace_s=1.0, state_file=tmp_path / "fleet.json")
        await supervisor.start()
        try:
            for _ in range(100):
                if supervisor.replica("payments", 1).status == "refused":
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a restart would come after 0.5 s of backoff
            assert supervisor.replica("payments", 1).status == "refused"
            assert RefusedSupervisor.spawned == 1 and supervisor.replica("payments", 1).restarts == 0
        finally:
            await supervisor.stop()

    logging.getLogger("fleet.ops.supervisor").setLevel(logging.CRITICAL)
    asyncio.run(scenario())
