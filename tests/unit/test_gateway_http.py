"""The gateway over HTTP, with an in-memory publisher: what it accepts is signed by its key, and every refusal has its status."""

import asyncio
import json
import time

import pytest
from aiokafka.errors import KafkaConnectionError
from fastapi.testclient import TestClient
from structlog.testing import capture_logs
from typer.testing import CliRunner

from contracts import REGISTRY, decode_value, source_of, verify_record
from fleet.cli.gateway import gateway_app
from fleet.runtime.keys import KeyStore
from fleet.runtime.store import open_store
from services.gateway import Client, Clients, GatewaySettings, add_client, create_app, hash_token
from services.gateway.app import ReadModelUnavailable
from services.gateway.clients import load_clients
from services.tracker import queries as tracker_queries
from services.tracker.core import OrderStatus
from tests.support import an_authorization, an_order, signer_of
from tests.support.gateway import FakePublisher, gateway_settings

ORDERS = REGISTRY.named("orders.placed.v1")
CLIENTS = Clients(clients=(
    Client(name="acme", token_sha256=hash_token("acme-token"), topics=("orders.placed.v1",)),
    Client(name="auditor", token_sha256=hash_token("auditor-token"), topics=("payments.authorized.v1",)),
))


@pytest.fixture
def settings(tmp_path) -> GatewaySettings:
    return gateway_settings(tmp_path, CLIENTS)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def http(settings, publisher):
    with TestClient(create_app(settings, publisher=publisher)) as client:
        yield client


def post(http, body, *, token: str | None = "acme-token", topic: str = "orders.placed.v1", headers: dict | None = None):
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    content = body if isinstance(body, bytes) else body.model_dump_json().encode()
    return http.post(f"/v1/events/{topic}", content=content, headers={"Content-Type": "application/json", **auth, **(headers or {})})


def test_a_valid_order_is_accepted_with_its_event_id_and_starts_a_new_flow(http, publisher):
    answer = post(http, an_order())
    assert answer.status_code == 202
    [record] = publisher.records
    assert answer.json() == {"event_id": record.envelope.id, "correlation_id": record.envelope.id, "topic": "orders.placed.v1"}


def test_the_correlation_id_header_names_the_flow(http, publisher):
    answer = post(http, an_order(), headers={"X-Correlation-Id": "checkout-42"})
    assert answer.json()["correlation_id"] == "checkout-42" == publisher.records[0].envelope.correlation_id


def test_an_empty_correlation_id_header_is_refused_as_the_openapi_document_says(http, publisher):
    parameters = http.get("/openapi.json").json()["paths"]["/v1/events/{topic}"]["post"]["parameters"]
    documented = next(p for p in parameters if p["name"] == "X-Correlation-Id")["schema"]
    answer = post(http, an_order(), headers={"X-Correlation-Id": ""})
    assert documented["minLength"] == 1
    assert answer.status_code == 422 and answer.json()["errors"][0]["loc"] == ["header", "X-Correlation-Id"]
    assert publisher.records == []


def test_the_record_is_signed_by_the_gateway_key_and_verifies_against_the_keyring(http, publisher, keys_dir):
    order = an_order()
    post(http, order)
    [record] = publisher.records
    keyring = KeyStore.for_signer(keys_dir, "gateway").keyring()
    envelope = verify_record(record.topic, record.key.encode(), record.value, record.raw_headers(), int(time.time() * 1000), keyring)
    assert envelope.keyid == signer_of("gateway").kid and envelope.source == source_of("gateway") == "/eventfleet/gateway"
    assert record.key == order.order_id and decode_value(ORDERS, record.value) == order


def test_a_request_without_a_token_is_unauthorized_and_told_the_scheme(http, publisher):
    answer = post(http, an_order(), token=None)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    assert answer.json()["reason"] == "missing_token" and publisher.records == []


def test_an_unknown_token_is_unauthorized(http, publisher):
    answer = post(http, an_order(), token="guessed")
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["reason"] == "unknown_token" and publisher.records == []


def test_a_token_for_another_topic_is_forbidden(http, publisher):
    answer = post(http, an_order(), token="auditor-token")
    assert (answer.status_code, answer.json()["reason"]) == (403, "topic_not_allowed") and publisher.records == []


def test_a_topic_the_gateway_key_may_not_sign_is_forbidden_even_to_an_allowed_client(http, publisher):
    answer = post(http, an_authorization(), token="auditor-token", topic="payments.authorized.v1")
    assert (answer.status_code, answer.json()["reason"]) == (403, "gateway_key_not_allowed") and publisher.records == []


def test_an_unknown_topic_is_not_found(http):
    answer = post(http, an_order(), topic="orders.cancelled.v1")
    assert (answer.status_code, answer.json()["reason"]) == (404, "unknown_topic")


def test_a_body_announced_over_the_topics_limit_is_refused_before_it_is_read(http, publisher):
    answer = post(http, b" " * (ORDERS.max_bytes + 1))
    assert (answer.status_code, answer.json()["reason"]) == (413, "body_too_large") and publisher.records == []


def test_a_chunked_body_over_the_limit_is_refused_by_its_actual_size(http, publisher):
    chunks = iter([b" " * 4096] * (ORDERS.max_bytes // 4096 + 1))  # no Content-Length: only the bytes themselves tell
    answer = http.post("/v1/events/orders.placed.v1", content=chunks, headers={"Authorization": "Bearer acme-token"})
    assert (answer.status_code, answer.json()["reason"]) == (413, "body_too_large") and publisher.records == []


def test_an_invalid_order_lists_every_field_error(http, publisher):
    body = json.loads(an_order().model_dump_json()) | {"currency": "euro", "total_cents": -1}
    del body["customer_id"]
    answer = post(http, json.dumps(body).encode())
    assert answer.status_code == 422 and answer.json()["reason"] == "invalid_event"
    assert sorted(tuple(e["loc"]) for e in answer.json()["errors"]) == [("currency",), ("customer_id",), ("total_cents",)]
    assert all(set(e) == {"loc", "msg"} for e in answer.json()["errors"]) and publisher.records == []


def test_a_broker_connection_error_is_a_503_and_the_gateway_keeps_answering(http, publisher):
    publisher.failure = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")
    refused = post(http, an_order())
    assert (refused.status_code, refused.json()["reason"]) == (503, "broker_unavailable")
    publisher.failure = None
    assert post(http, an_order()).status_code == 202, "the broker is back: the next request goes through"


def test_a_broker_that_does_not_confirm_in_time_is_a_503(http, publisher, settings):
    publisher.delay_s = settings.publish_timeout_s + 1
    started = time.monotonic()
    answer = post(http, an_order())
    assert answer.status_code == 503 and time.monotonic() - started < settings.publish_timeout_s + 0.5


def test_a_client_added_while_the_gateway_runs_is_accepted_without_a_restart(http, settings):
    assert post(http, an_order(), token="acme-token").status_code == 202  # the file has been read once already
    token = add_client(settings.clients_file, "newcomer", ["orders.placed.v1"])
    assert post(http, an_order(), token=token).status_code == 202


def test_a_clients_file_that_turns_invalid_is_ignored_and_the_last_valid_clients_stay(http, settings):
    assert post(http, an_order()).status_code == 202
    settings.clients_file.write_text('{"clients": [{"name": "acme", "token": "plain-text"}]}')
    assert post(http, an_order()).status_code == 202, "a broken edit does not lock every client out"
    assert post(http, an_order(), token="plain-text").status_code == 401


def test_tokens_never_appear_in_the_logs(http):
    with capture_logs() as logs:
        post(http, an_order(), token="acme-token")
        post(http, an_order(), token="guessed-secret")
    assert [(e["event"], e.get("client")) for e in logs if e["event"] in ("event_accepted", "request_refused")] == [
        ("event_accepted", "acme"), ("request_refused", None)]
    assert "acme-token" not in repr(logs) and "guessed-secret" not in repr(logs)


def test_the_publisher_runs_for_the_apps_lifetime(settings, publisher):
    with TestClient(create_app(settings, publisher=publisher)):
        assert publisher.running
    assert not publisher.running


def test_health_and_the_openapi_docs_are_served(http):
    assert http.get("/health").status_code == 200
    assert http.get("/docs").status_code == 200
    document = http.get("/openapi.json").json()
    operation = document["paths"]["/v1/events/{topic}"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "oneOf": [{"$ref": "#/components/schemas/OrderPlaced"}, {"$ref": "#/components/schemas/OrderPlacedV2"}]}
    assert {"OrderPlaced", "OrderPlacedV2", "OrderItem"} <= set(document["components"]["schemas"])
    assert "X-Correlation-Id" in [p["name"] for p in operation["parameters"]] and operation["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_add_client_prints_the_token_once_and_keeps_only_its_hash(http, settings):
    result = CliRunner().invoke(gateway_app, ["add-client", "partner", "--topic", "orders.placed.v1", "--clients-file", str(settings.clients_file)])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert load_clients(settings.clients_file).named("partner").token_sha256 == hash_token(token)
    assert token not in settings.clients_file.read_text()
    assert post(http, an_order(), token=token).status_code == 202


def test_add_client_refuses_an_unknown_topic_and_a_taken_name(settings):
    runner = CliRunner()
    unknown = runner.invoke(gateway_app, ["add-client", "x", "--topic", "orders.cancelled.v1", "--clients-file", str(settings.clients_file)])
    taken = runner.invoke(gateway_app, ["add-client", "acme", "--topic", "orders.placed.v1", "--clients-file", str(settings.clients_file)])
    assert unknown.exit_code == taken.exit_code == 64  # bad input (README, Exit codes)
    assert load_clients(settings.clients_file) == CLIENTS


# ---- GET /v1/orders/{order_id}: the tracker's read model ----------------------------------------------------------

AN_ORDER_STATUS = {
    "order_id": "ord-7f3a9c", "status": "payment_authorized", "correlation_id": "checkout-42", "customer_id": "cus-1042",
    "history": [
        {"event_type": "dev.eventfleet.orders.placed.v1", "event_id": "e1", "time": "2026-11-24T16:00:00Z", "source": "/eventfleet/storefront"},
        {"event_type": "dev.eventfleet.payments.authorized.v1", "event_id": "e2", "time": "2026-11-24T16:00:01Z", "source": "/eventfleet/payments"},
    ],
}


class FakeReadModel:
    """The tracker's answers by order id; `down` makes every read fail as an unreachable database would."""

    def __init__(self, orders: dict) -> None:
        self.orders = orders
        self.down = False

    async def __call__(self, order_id: str) -> dict | None:
        if self.down:
            raise ReadModelUnavailable("connection refused")
        return self.orders.get(order_id)


@pytest.fixture
def read_model() -> FakeReadModel:
    return FakeReadModel({AN_ORDER_STATUS["order_id"]: AN_ORDER_STATUS})


@pytest.fixture
def reader(settings, publisher, read_model):
    with TestClient(create_app(settings, publisher=publisher, order_status=read_model)) as client:
        yield client


def get_order(http, order_id: str = "ord-7f3a9c", *, token: str | None = "acme-token"):
    return http.get(f"/v1/orders/{order_id}", headers={"Authorization": f"Bearer {token}"} if token else {})


def test_an_order_the_tracker_has_seen_is_answered_with_its_status_flow_and_history(reader):
    answer = get_order(reader)
    assert answer.status_code == 200 and answer.json() == AN_ORDER_STATUS


def test_any_client_with_a_valid_token_may_read_orders_whatever_it_may_publish(reader):
    assert get_order(reader, token="auditor-token").json() == AN_ORDER_STATUS


def test_reading_an_order_without_a_token_or_with_an_unknown_one_is_unauthorized(reader):
    missing, unknown = get_order(reader, token=None), get_order(reader, token="guessed")
    assert (missing.status_code, missing.json()["reason"], missing.headers["WWW-Authenticate"]) == (401, "missing_token", "Bearer")
    assert (unknown.status_code, unknown.json()["reason"]) == (401, "unknown_token")


def test_an_unauthorized_caller_learns_nothing_even_when_the_read_model_is_down(reader, read_model):
    read_model.down = True
    assert get_order(reader, "ord-anything", token=None).status_code == 401


def test_an_order_the_tracker_has_not_seen_is_not_found(reader):
    answer = get_order(reader, "ord-never-placed")
    assert (answer.status_code, answer.json()["reason"]) == (404, "unknown_order") and "ord-never-placed" in answer.json()["detail"]


def test_a_read_model_that_cannot_be_read_is_a_503_and_the_gateway_keeps_answering(reader, read_model):
    read_model.down = True
    refused = get_order(reader)
    assert (refused.status_code, refused.json()["reason"]) == (503, "read_model_unavailable")
    read_model.down = False
    assert get_order(reader).status_code == 200, "the database is back: the next read goes through"


def test_the_order_endpoint_is_documented_with_its_answer_and_refusals(reader):
    operation = reader.get("/openapi.json").json()["paths"]["/v1/orders/{order_id}"]["get"]
    assert {"200", "401", "404", "503"} <= set(operation["responses"]) and operation["security"] == [{"bearer": []}]


def test_the_gateway_starts_without_the_trackers_store_and_does_not_create_it(settings, publisher, tmp_path):
    missing = tmp_path / "tracker" / "tracker.db"
    app = create_app(settings.model_copy(update={"tracker_store_url": f"sqlite:///{missing}"}), publisher=publisher,
                     read_model=tracker_queries.order_status)
    with TestClient(app) as http:
        assert http.get("/health").status_code == 200
        answer = get_order(http)
    assert (answer.status_code, answer.json()["reason"]) == (503, "read_model_unavailable")
    assert not missing.parent.exists(), "the gateway reads the tracker's store; it never makes one"


def test_the_gateway_reads_the_trackers_sqlite_store(settings, publisher, tmp_path):
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    asyncio.run(a_tracker_store_holding(url, OrderStatus(order_id="ord-1", status="placed", correlation_id="flow-1", customer_id="cus-1")))
    app = create_app(settings.model_copy(update={"tracker_store_url": url}), publisher=publisher, read_model=tracker_queries.order_status)
    with TestClient(app) as http:
        found, unknown = get_order(http, "ord-1"), get_order(http, "ord-2")
    assert found.status_code == 200 and found.json() == {
        "order_id": "ord-1", "status": "placed", "correlation_id": "flow-1", "customer_id": "cus-1", "history": []}
    assert unknown.status_code == 404


def test_a_store_url_of_no_known_kind_is_a_503(settings, publisher):
    app = create_app(settings.model_copy(update={"tracker_store_url": "mysql://tracker"}), publisher=publisher,
                     read_model=tracker_queries.order_status)
    with TestClient(app) as http:
        assert get_order(http).json()["reason"] == "read_model_unavailable"


async def a_tracker_store_holding(url: str, status: OrderStatus) -> None:
    """What the tracker leaves behind: its tables, and one order's status."""
    async with await open_store(url) as store:
        await store.migrate(tracker_queries.MIGRATIONS)
        async with store.transaction() as tx:
            await tracker_queries.save(tx, status)
