"""The gateway while orders.placed.v1 is not retired, with an in-memory publisher: a client allowed orders.placed.v2
publishes v2 orders, one allowed only v1 is refused v2, each topic takes its own version's body only, and the OpenAPI
document and `fleet gateway add-client` name v2 first."""

import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from contracts import REGISTRY, OrderPlaced, OrderPlacedV2, decode_value, verify_record
from fleet.cli.gateway import gateway_app
from fleet.runtime.keys import KeyStore
from services.gateway import Client, Clients, GatewaySettings, create_app, hash_token
from services.gateway.clients import load_clients
from tests.support import an_order, an_order_v2, signer_of
from tests.support.gateway import FakePublisher, gateway_settings

V1, V2 = REGISTRY.of(OrderPlaced), REGISTRY.of(OrderPlacedV2)
CLIENTS = Clients(clients=(
    Client(name="tills", token_sha256=hash_token("tills-token"), topics=(V2.name,)),
    Client(name="legacy", token_sha256=hash_token("legacy-token"), topics=(V1.name,)),
    Client(name="shop", token_sha256=hash_token("shop-token"), topics=(V1.name, V2.name)),
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


def post(http, event_or_body, *, token: str, topic: str):
    body = event_or_body if isinstance(event_or_body, bytes) else event_or_body.model_dump_json().encode()
    return http.post(f"/v1/events/{topic}", content=body,
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})


def test_a_client_allowed_v2_publishes_a_v2_order_signed_by_the_gateway_on_orders_placed_v2(http, publisher, keys_dir):
    order = an_order_v2(channel="store")
    answer = post(http, order, token="tills-token", topic=V2.name)
    assert answer.status_code == 202, answer.text
    [record] = publisher.records
    assert answer.json() == {"event_id": record.envelope.id, "correlation_id": record.envelope.id, "topic": V2.name}
    assert (record.topic, record.key, record.envelope.type) == (V2.name, order.order_id, V2.type_name)
    keyring = KeyStore.for_signer(keys_dir, "gateway").keyring()
    envelope = verify_record(record.topic, record.key.encode(), record.value, record.raw_headers(), int(time.time() * 1000), keyring)
    assert envelope.keyid == signer_of("gateway").kid
    assert decode_value(V2, record.value) == order


def test_a_client_allowed_both_versions_publishes_each_on_its_own_topic(http, publisher):
    old, new = an_order(), an_order_v2(channel="phone")
    assert post(http, old, token="shop-token", topic=V1.name).status_code == 202
    assert post(http, new, token="shop-token", topic=V2.name).status_code == 202
    assert [(r.topic, r.envelope.type, decode_value(REGISTRY.named(r.topic), r.value)) for r in publisher.records] == [
        (V1.name, V1.type_name, old), (V2.name, V2.type_name, new)
    ]


def test_a_client_allowed_only_v1_is_refused_v2_and_the_other_way_round(http, publisher):
    legacy = post(http, an_order_v2(), token="legacy-token", topic=V2.name)
    tills = post(http, an_order(), token="tills-token", topic=V1.name)
    assert (legacy.status_code, legacy.json()["reason"]) == (403, "topic_not_allowed")
    assert legacy.json()["detail"] == f"client legacy may not publish to {V2.name}"
    assert (tills.status_code, tills.json()["reason"]) == (403, "topic_not_allowed")
    assert publisher.records == []


def test_each_topic_takes_only_its_own_versions_body(http, publisher):
    v1_body_on_v2 = post(http, an_order(), token="shop-token", topic=V2.name)
    v2_body_on_v1 = post(http, an_order_v2(channel="store"), token="shop-token", topic=V1.name)
    unknown_channel = post(http, an_order_v2().model_dump_json().replace('"web"', '"fax"').encode(), token="shop-token", topic=V2.name)
    assert v1_body_on_v2.status_code == v2_body_on_v1.status_code == unknown_channel.status_code == 422
    assert [e["loc"] for e in v1_body_on_v2.json()["errors"]] == [["channel"]], "v2 wants the channel"
    assert [e["loc"] for e in v2_body_on_v1.json()["errors"]] == [["channel"]], "v1 has no channel"
    assert [e["loc"] for e in unknown_channel.json()["errors"]] == [["channel"]]
    assert publisher.records == []


def test_the_openapi_document_names_orders_placed_v2_first_and_its_schema(http):
    document = http.get("/openapi.json").json()
    operation = document["paths"]["/v1/events/{topic}"]["post"]
    [topic] = [p for p in operation["parameters"] if p["name"] == "topic"]
    assert topic["schema"]["examples"][0] == V2.name and V1.name in topic["schema"]["examples"]
    assert "orders.placed.v2" in topic["description"]
    assert {"$ref": "#/components/schemas/OrderPlacedV2"} in operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert document["components"]["schemas"]["OrderPlacedV2"]["properties"]["channel"]["enum"] == ["web", "store", "phone"]


def test_add_client_for_orders_placed_v2_needs_no_warning(settings):
    result = CliRunner().invoke(gateway_app, ["add-client", "storefront", "--topic", V2.name, "--clients-file", str(settings.clients_file)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output and f"client storefront may publish to {V2.name}" in result.output
    assert load_clients(settings.clients_file).named("storefront").topics == (V2.name,)
