"""The committed asyncapi.yaml is what the code generates, and it tells an engineer every topic, header, sender and receiver."""

import os
import subprocess
import sys

import jsonschema
import pytest
import yaml

from contracts import REGISTRY
from contracts.envelope import H_CAUSATION, H_CORRELATION, REQUIRED_HEADERS
from fleet.docs.asyncapi import DOCUMENT, UnknownService, document_services, fleet_document, render, service_document
from fleet.runtime.asyncapi import EVENT_HEADERS, KAFKA_BINDING_VERSION, channel_id
from fleet.runtime.delivery.dead_letters import DLQ_HEADERS
from fleet.runtime.delivery.retries import RETRY_HEADERS
from fleet.ops.topics import desired_topics
from fleet.catalog import WORKERS

REPO = DOCUMENT.parent
WIRE_FORMAT_V1_HEADERS = {
    "ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_dataschema", "ce_subject", "ce_correlationid",
    "ce_causationid", "ce_keyid", "ce_signature", "content-type", "traceparent", "tracestate",
}


@pytest.fixture(scope="module")
def document() -> dict:
    return fleet_document()


def _ref(document: dict, ref: str) -> dict:
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _operations(document: dict, service: str | None = None, action: str | None = None) -> list[dict]:
    return [op for op in document["operations"].values()
            if (service is None or op["x-eventfleet-service"] == service) and (action is None or op["action"] == action)]


def _address(document: dict, operation: dict) -> str:
    return _ref(document, operation["channel"]["$ref"])["address"]


def test_the_committed_document_is_what_the_code_generates():
    assert DOCUMENT.read_text() == render(), "run `fleet docs gen` and commit asyncapi.yaml"


def test_the_document_is_valid_yaml_of_asyncapi_3_without_anchors():
    text = DOCUMENT.read_text()
    assert yaml.safe_load(text)["asyncapi"] == "3.0.0"
    assert "&id0" not in text and "*id0" not in text, "shared objects are written out in full, never as YAML aliases"


def test_the_document_does_not_depend_on_the_environment():
    env = os.environ | {"PAYMENTS_GROUP_ID": "somewhere-else", "FLEET_KAFKA_BOOTSTRAP_SERVERS": "elsewhere:1234",
                        "TRACKER_GROUP_ID": "another"}
    generated = subprocess.run([sys.executable, "-c", "import sys; from fleet.docs.asyncapi import render; sys.stdout.write(render())"],
                               cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    assert generated == DOCUMENT.read_text()


def test_every_registry_topic_has_a_channel_with_kafka_bindings(document):
    channels = {channel["address"]: channel for channel in document["channels"].values()}
    specs = {spec.name: spec for spec in desired_topics()}
    for topic in REGISTRY:
        for address in (topic.name, *topic.retry_topics, topic.dead_letter_topic):
            channel = channels[address]
            assert document["channels"][channel_id(address)] is channel
            kafka = channel["bindings"]["kafka"]
            assert kafka["topic"] == address
            assert kafka["partitions"] == topic.partitions == specs[address].partitions
            assert kafka["replicas"] >= 1
            assert kafka["topicConfiguration"]["retention.ms"] == int(specs[address].configs["retention.ms"])
            assert kafka["topicConfiguration"]["message.timestamp.type"] == "LogAppendTime"
            assert kafka["bindingVersion"] == KAFKA_BINDING_VERSION
            assert len(channel["messages"]) == 1, "one message per channel"
            assert channel["description"]


def test_every_message_has_a_kafka_key_binding_named_after_the_registry_key_field(document):
    for topic in REGISTRY:
        for channel in (document["channels"][channel_id(name)] for name in (topic.name, *topic.retry_topics, topic.dead_letter_topic)):
            (message_ref,) = channel["messages"].values()
            message = _ref(document, message_ref["$ref"])
            key = message["bindings"]["kafka"]["key"]
            assert key["type"] == "string" and f"`{topic.key_field}`" in key["description"] and key["examples"]
            assert message["bindings"]["kafka"]["bindingVersion"] == KAFKA_BINDING_VERSION


def test_retry_and_dead_letter_channels_are_described_with_their_headers_and_readers(document):
    for topic in REGISTRY:
        for tier, name in enumerate(topic.retry_topics, start=1):
            channel = document["channels"][channel_id(name)]
            assert channel["x-eventfleet-kind"] == "retry" and f"Retry tier {tier}" in channel["description"]
            message = _ref(document, next(iter(channel["messages"].values()))["$ref"])
            assert message["payload"] == {"$ref": f"#/components/schemas/{topic.model.__name__}"}, "the original event"
            assert message["headers"] == {"$ref": "#/components/schemas/RetryHeaders"}
        dlq = document["channels"][channel_id(topic.dead_letter_topic)]
        assert dlq["x-eventfleet-kind"] == "dead-letter" and "fleet dlq" in dlq["description"]
        message = _ref(document, next(iter(dlq["messages"].values()))["$ref"])
        assert {"$ref": f"#/components/schemas/{topic.model.__name__}"} in message["payload"]["anyOf"]
        assert message["headers"] == {"$ref": "#/components/schemas/DeadLetterHeaders"}
        readers = [op for op in _operations(document, "fleet-dlq", "receive") if _address(document, op) == topic.dead_letter_topic]
        assert readers, f"who reads {topic.dead_letter_topic}"
    schemas = document["components"]["schemas"]
    assert set(RETRY_HEADERS) <= set(schemas["RetryHeaders"]["properties"])
    assert set(RETRY_HEADERS) <= set(schemas["RetryHeaders"]["required"])
    assert set(DLQ_HEADERS) <= set(schemas["DeadLetterHeaders"]["properties"])
    assert set(schemas["DeadLetterHeaders"]["required"]) == set(DLQ_HEADERS), "the original headers may be why it is a dead letter"


def test_every_registry_consumer_receives_in_its_group_and_every_worker_owner_sends(document):
    for topic in REGISTRY:
        for consumer in topic.consumers:
            groups = {op["bindings"]["kafka"].get("groupId", {}).get("enum", [None])[0]
                      for op in _operations(document, consumer, "receive") if _address(document, op) == topic.name}
            assert groups == {None if topic.broadcast else consumer}, f"{consumer} receives {topic.name} in its group"
            for tier, name in enumerate(topic.retry_topics, start=1):
                retry_groups = {op["bindings"]["kafka"]["groupId"]["enum"][0] for op in _operations(document, consumer, "receive")
                                if _address(document, op) == name}
                assert retry_groups == {f"{consumer}.retry.{tier}"}
            assert any(_address(document, op) == topic.dead_letter_topic for op in _operations(document, consumer, "send"))
        senders = {op["x-eventfleet-service"] for op in _operations(document, action="send") if _address(document, op) == topic.name}
        assert topic.owner in senders, f"{topic.owner} sends {topic.name}"
    receivers = {(op["x-eventfleet-service"], _address(document, op)) for op in _operations(document, action="receive")
                 if op["x-eventfleet-service"] in WORKERS and _address(document, op) in {t.name for t in REGISTRY}}
    assert receivers == {(consumer, t.name) for t in REGISTRY for consumer in t.consumers}, "FastStream's subscribers are the registry's"


def test_every_operation_names_its_service(document):
    for name, operation in document["operations"].items():
        service = operation["x-eventfleet-service"]
        assert name.startswith(f"{service}_") and operation["title"].startswith(f"{service} ")
        assert f"`{service}`" in operation["summary"] and operation["tags"] == [{"name": service}]
        assert operation["messages"] and all(m["$ref"].startswith(operation["channel"]["$ref"] + "/messages/") for m in operation["messages"])
    from_faststream = {op["x-faststream-operation"] for op in document["operations"].values() if "x-faststream-operation" in op}
    # A subscriber of several topics (payments' reads orders.placed.v2 and v1) has one FastStream operation per topic.
    assert "on_order_placed:orders.placed.v2Subscribe" in from_faststream and "to_payment_authorized" in from_faststream


def test_the_headers_schema_covers_every_header_of_wire_format_v1(document):
    headers = document["components"]["schemas"]["EventHeaders"]
    assert WIRE_FORMAT_V1_HEADERS == set(EVENT_HEADERS)
    assert WIRE_FORMAT_V1_HEADERS <= set(headers["properties"])
    assert headers["required"] == list(REQUIRED_HEADERS)
    assert H_CAUSATION not in headers["required"] and "traceparent" not in headers["required"]
    for name, schema in headers["properties"].items():
        assert schema["description"] and schema["examples"], name
        jsonschema.validate(schema["examples"][0], schema)


def test_every_message_points_its_correlation_id_at_ce_correlationid(document):
    for name, message in document["components"]["messages"].items():
        assert message["correlationId"]["location"] == f"$message.header#/{H_CORRELATION}", name


def test_message_examples_are_valid_for_their_headers_and_payload(document):
    schemas = document["components"]["schemas"]
    resolver_root = {"components": document["components"]}
    for name, message in document["components"]["messages"].items():
        headers = _ref(document, message["headers"]["$ref"])
        topic = REGISTRY.named(message["x-eventfleet-topic"])
        for example in message["examples"]:
            jsonschema.validate(example["headers"], headers)
            topic.model.model_validate(example["payload"])
            validator = jsonschema.Draft7Validator(resolver_root | message["payload"]) if "$ref" in message["payload"] else None
            if validator:
                validator.validate(example["payload"])
    assert schemas


def test_payload_schemas_keep_the_contracts_descriptions_examples_and_personal_marks(document):
    schemas = document["components"]["schemas"]

    def fields(model):
        return model.model_json_schema(ref_template="#/components/schemas/{model}")["properties"]

    for topic in REGISTRY:
        schema = schemas[topic.model.__name__]
        assert schema["description"]
        for field, generated in fields(topic.model).items():
            prop = schema["properties"][field]
            assert prop.get("description") and prop.get("examples"), f"{topic.model.__name__}.{field}"
            assert prop.get("x-personal") == generated.get("x-personal"), f"{topic.model.__name__}.{field}"
    for schema_name, schema in schemas.items():
        if schema_name.endswith("Headers"):
            continue
        for field, prop in schema.get("properties", {}).items():
            assert prop.get("description") and prop.get("examples"), f"{schema_name}.{field}"
    assert schemas["OrderPlaced"]["properties"]["customer_id"]["x-personal"] is True


def test_servers_and_the_security_scheme(document):
    assert document["servers"]["local"] == {"host": "127.0.0.1:9092", "protocol": "kafka",
                                            "description": document["servers"]["local"]["description"]}
    production = document["servers"]["production"]
    assert production["protocol"] == "kafka-secure" and "{broker}" in production["host"] and "broker" in production["variables"]
    assert production["security"] == [{"$ref": "#/components/securitySchemes/scramSha512"}]
    assert document["components"]["securitySchemes"]["scramSha512"]["type"] == "scramSha512"
    # The local secure broker is where a reader can try what the scheme says (make kafka-secure).
    secure = document["servers"]["local-secure"]
    assert (secure["host"], secure["protocol"], secure["security"]) == ("127.0.0.1:9094", "kafka-secure", production["security"])


def test_the_info_explains_the_fleet_and_links_the_docs(document):
    info = document["info"]
    assert "(docs/wire-format.md)" in info["description"] and "(docs/delivery.md)" in info["description"]
    assert info["externalDocs"]["url"].startswith("https://")
    assert (REPO / "docs" / "wire-format.md").exists() and (REPO / "docs" / "delivery.md").exists()


def test_every_reference_resolves_and_every_component_is_used(document):
    text = yaml.safe_dump(document)
    for service in (None, *document_services()):
        doc = document if service is None else service_document(service)
        refs = set()

        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    refs.add(value) if key == "$ref" else walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(doc)
        for ref in refs:
            _ref(doc, ref)
        for part in ("messages", "schemas"):
            for name in doc["components"][part]:
                assert f"#/components/{part}/{name}" in refs, f"{service}: unused {part} {name}"
    assert text


@pytest.mark.parametrize("service", WORKERS)
def test_a_service_document_holds_exactly_that_services_channels_and_operations(document, service):
    own = service_document(service)
    operations = _operations(document, service)
    assert set(own["operations"]) == {name for name, op in document["operations"].items() if op["x-eventfleet-service"] == service}
    assert {c["address"] for c in own["channels"].values()} == {_address(document, op) for op in operations}
    consumed = {t.name for t in REGISTRY.consumed_by(service)}
    owned = {t.name for t in REGISTRY.owned_by(service)}
    expected = owned | consumed | {n for t in REGISTRY.consumed_by(service) for n in (*t.retry_topics, t.dead_letter_topic)}
    assert {c["address"] for c in own["channels"].values()} == expected
    assert own["servers"] == document["servers"] and own["components"]["securitySchemes"]
    assert service in own["info"]["title"]


def test_the_payments_document_and_an_unknown_service():
    payments = service_document("payments")
    assert {c["address"] for c in payments["channels"].values()} == {
        "orders.placed.v1", "orders.placed.v1.retry.1", "orders.placed.v1.retry.2", "orders.placed.v1.retry.3",
        "orders.placed.v1.dlq", "payments.authorized.v1", "payments.declined.v1", "fleet.control.v1", "fleet.control.v1.dlq",
        "orders.placed.v2", "orders.placed.v2.retry.1", "orders.placed.v2.retry.2", "orders.placed.v2.retry.3", "orders.placed.v2.dlq",
    }
    assert set(payments["components"]["messages"]) == {
        "OrderPlaced", "OrderPlacedRetry", "OrderPlacedDeadLetter", "PaymentAuthorized", "PaymentDeclined",
        "ControlIssued", "ControlIssuedDeadLetter", "OrderPlacedV2", "OrderPlacedV2Retry", "OrderPlacedV2DeadLetter"}
    with pytest.raises(UnknownService, match="payments"):
        service_document("no-such-service")


def test_fleet_docs_gen_writes_a_service_document(tmp_path):
    from typer.testing import CliRunner

    from fleet.cli import app

    target = tmp_path / "payments.yaml"
    result = CliRunner().invoke(app, ["docs", "gen", "--service", "payments", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text() == render(service_document("payments"))
    to_stdout = CliRunner().invoke(app, ["docs", "gen", "--service", "payments"])
    assert to_stdout.exit_code == 0 and to_stdout.stdout == render(service_document("payments"))
    unknown = CliRunner().invoke(app, ["docs", "gen", "--service", "nobody"])
    assert unknown.exit_code == 64  # an unknown service is bad input (README, Exit codes)
