"""The committed asyncapi.yaml is what the code generates: one document for the whole fleet, always current."""

import yaml

from contracts import REGISTRY
from fleet.asyncapi import DOCUMENT, fleet_document, render


def test_the_committed_document_is_what_the_code_generates():
    assert DOCUMENT.read_text() == render(), "run `fleet docs gen` and commit asyncapi.yaml"


def test_every_consumed_topic_and_every_owned_topic_of_a_service_has_a_channel():
    addresses = {channel["address"] for channel in fleet_document()["channels"].values()}
    consumed_or_owned_by_a_worker = {t.name for t in REGISTRY if t.consumers or t.owner not in ("storefront", "warehouse")}
    assert consumed_or_owned_by_a_worker <= addresses


def test_the_document_is_valid_yaml_of_asyncapi_3():
    assert yaml.safe_load(DOCUMENT.read_text())["asyncapi"] == "3.0.0"
