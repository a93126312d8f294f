"""The gateway's pure decisions: tokens are kept hashed, a client publishes only to its own topics, bodies fit their topic."""

import hashlib
import json

import pytest
from pydantic import ValidationError

from contracts import REGISTRY, PrivateKey
from services.gateway.core import (
    Allowed,
    Client,
    Clients,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    TooLarge,
    Unauthorized,
    authorize,
    bearer_token,
    declared_size,
    gateway_may_sign,
    hash_token,
    parse_event,
    size_refusal,
)
from tests.support import an_order

ORDERS = REGISTRY.named("orders.placed.v1")
ACME = Client(name="acme", token_sha256=hash_token("acme-token"), topics=("orders.placed.v1",))
PAYMENTS_ONLY = Client(name="auditor", token_sha256=hash_token("auditor-token"), topics=("payments.authorized.v1",))
CLIENTS = Clients(clients=(ACME, PAYMENTS_ONLY))


def test_a_token_is_kept_as_the_lowercase_hex_sha256_of_its_text():
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_known_token_for_an_allowed_topic_is_allowed_with_its_client_and_topic():
    assert authorize(CLIENTS, "Bearer acme-token", "orders.placed.v1") == Allowed(ACME, ORDERS)


def test_the_bearer_scheme_is_case_insensitive():
    assert bearer_token("bearer acme-token") == bearer_token("BEARER  acme-token ") == "acme-token"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic YWNtZTpzZWNyZXQ=", "acme-token"])
def test_a_request_without_a_bearer_token_is_unauthorized(header):
    outcome = authorize(CLIENTS, header, "orders.placed.v1")
    assert isinstance(outcome, Unauthorized) and outcome.reason == "missing_token"


def test_an_unknown_token_is_unauthorized():
    outcome = authorize(CLIENTS, "Bearer not-a-token", "orders.placed.v1")
    assert isinstance(outcome, Unauthorized) and outcome.reason == "unknown_token" and outcome.status == 401


def test_the_hash_itself_is_not_a_token():
    assert isinstance(authorize(CLIENTS, f"Bearer {ACME.token_sha256}", "orders.placed.v1"), Unauthorized)


def test_a_token_for_another_topic_is_forbidden():
    outcome = authorize(CLIENTS, "Bearer auditor-token", "orders.placed.v1")
    assert isinstance(outcome, Forbidden) and outcome.reason == "topic_not_allowed" and outcome.status == 403


def test_an_unknown_topic_is_not_found_for_a_known_client_only():
    found = authorize(CLIENTS, "Bearer acme-token", "orders.cancelled.v1")
    assert isinstance(found, NotFound) and found.status == 404 and "orders.placed.v1" in found.detail
    assert isinstance(authorize(CLIENTS, "Bearer wrong", "orders.cancelled.v1"), Unauthorized), "who asks comes first"


def test_the_gateway_key_must_be_trusted_for_the_topic():
    key = PrivateKey.generate("gateway-test")
    assert gateway_may_sign(key.public(["orders.placed.v1"]), ORDERS) is None
    assert gateway_may_sign(key.public(["*"]), ORDERS) is None
    refused = gateway_may_sign(key.public(["payments.authorized.v1"]), ORDERS)
    assert isinstance(refused, Forbidden) and refused.reason == "gateway_key_not_allowed"
    assert isinstance(gateway_may_sign(None, ORDERS), Forbidden), "a signing key missing from the keyring signs nothing"


def test_a_body_up_to_the_topics_limit_fits_and_one_byte_more_is_too_large():
    assert size_refusal(ORDERS.max_bytes, ORDERS) is None
    refused = size_refusal(ORDERS.max_bytes + 1, ORDERS)
    assert isinstance(refused, TooLarge) and refused.status == 413 and str(ORDERS.max_bytes) in refused.detail


def test_an_unknown_size_is_decided_later_by_the_bytes_that_arrive():
    assert size_refusal(None, ORDERS) is None
    assert [declared_size(v) for v in ("120", None, "", "x", "-1")] == [120, None, None, None, None]


def test_a_valid_body_is_parsed_into_the_topics_model():
    order = an_order()
    assert parse_event(ORDERS, order.model_dump_json().encode(), "flow-1") == order


def test_an_invalid_body_lists_every_field_error():
    body = an_order().model_dump(mode="json") | {"currency": "euro", "total_cents": -1}
    body["items"][0]["quantity"] = 0
    outcome = parse_event(ORDERS, json.dumps(body).encode(), None)
    assert isinstance(outcome, Invalid) and outcome.status == 422
    assert {("currency",), ("items", 0, "quantity"), ("total_cents",)} <= {tuple(e["loc"]) for e in outcome.errors}
    assert all(set(e) == {"loc", "msg"} for e in outcome.errors)


def test_a_body_that_is_not_json_is_invalid():
    assert isinstance(parse_event(ORDERS, b"{not json", None), Invalid)


@pytest.mark.parametrize("correlation_id", ["", "x" * 201, "line\nbreak"])
def test_a_correlation_id_must_be_short_printable_text(correlation_id):
    outcome = parse_event(ORDERS, an_order().model_dump_json().encode(), correlation_id)
    assert isinstance(outcome, Invalid) and outcome.errors[0]["loc"] == ["header", "X-Correlation-Id"]


def test_adding_a_client_with_an_existing_name_replaces_it():
    renewed = ACME.model_copy(update={"token_sha256": hash_token("new-token")})
    clients = CLIENTS.with_client(renewed)
    assert clients.named("acme") == renewed and len(clients.clients) == 2
    assert isinstance(authorize(clients, "Bearer acme-token", "orders.placed.v1"), Unauthorized), "the old token stops working"


@pytest.mark.parametrize("entry", [
    {"name": "acme", "token_sha256": "not-hex", "topics": []},
    {"name": "acme", "token_sha256": hash_token("t").upper(), "topics": []},
    {"name": "acme", "token": "plain-text-token", "topics": []},
])
def test_a_clients_file_entry_must_hold_a_sha256_hash_and_nothing_else(entry):
    with pytest.raises(ValidationError):
        Clients.model_validate({"clients": [entry]})


def test_two_clients_may_not_share_a_name():
    with pytest.raises(ValidationError, match="share a name"):
        Clients(clients=(ACME, ACME.model_copy(update={"token_sha256": hash_token("other")})))


def test_a_closed_or_retired_topic_is_gone_and_names_the_version_to_publish_instead():
    from contracts import Registry
    from contracts.registry import TOPICS, with_lifecycle

    for ended in ({"closed": {"orders.placed.v1": "2026-12-05"}}, {"retired": {"orders.placed.v1": "2026-12-05"}}):
        registry = Registry(with_lifecycle(TOPICS, ended))
        outcome = authorize(CLIENTS, "Bearer acme-token", "orders.placed.v1", registry)
        assert isinstance(outcome, Gone) and outcome.status == 410 and outcome.reason == "topic_retired"
        assert "orders.placed.v2" in outcome.detail
    assert isinstance(authorize(CLIENTS, "Bearer acme-token", "orders.placed.v1"), Allowed), "open while v1 is neither"
