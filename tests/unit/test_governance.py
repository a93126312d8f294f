"""Contract governance (contracts/governance.py): compatibility rules on hand-made schema pairs, revision files, documented fields, valid examples."""

import json
from pathlib import Path
from typing import Literal, Optional

import pytest
from pydantic import BaseModel, ConfigDict, Field

from contracts import REGISTRY, Event, Registry, Topic
from contracts.governance import (
    DIALECT,
    SCHEMAS_DIR,
    compatibility,
    contract_problems,
    documentation_problems,
    example_problems,
    export_schemas,
    field_example_problems,
    load_revisions,
    next_topic_version,
    revision_document,
    revision_problems,
)


def obj(properties: dict, required=(), **extra) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False, **extra}


STR = {"type": "string"}
INT = {"type": "integer"}
BASE = obj({"order_id": STR, "amount": INT}, required=["order_id", "amount"])


def rules(old, new) -> list[tuple[str, str]]:
    return [(found.path, found.rule) for found in compatibility(old, new)]


# ---- compatibility: what a consumer on the new schema can still read -------------------------------------------------


def test_the_same_schema_is_compatible():
    assert rules(BASE, BASE) == []


def test_an_added_optional_field_with_a_default_is_compatible():
    new = obj({**BASE["properties"], "note": {"type": "string", "default": ""}}, required=["order_id", "amount"])
    assert rules(BASE, new) == []


def test_an_added_optional_nullable_field_is_compatible():
    new = obj({**BASE["properties"], "note": {"anyOf": [STR, {"type": "null"}], "default": None}}, required=["order_id", "amount"])
    assert rules(BASE, new) == []


def test_an_added_required_field_breaks():
    new = obj({**BASE["properties"], "note": STR}, required=["order_id", "amount", "note"])
    assert rules(BASE, new) == [("note", "required-field-added")]


def test_an_optional_field_made_required_breaks():
    old = obj({"order_id": STR, "note": STR}, required=["order_id"])
    new = obj({"order_id": STR, "note": STR}, required=["order_id", "note"])
    assert rules(old, new) == [("note", "field-made-required")]


def test_a_required_field_made_optional_is_compatible():
    assert rules(BASE, obj(BASE["properties"], required=["order_id"])) == []


def test_a_removed_field_breaks():
    new = obj({"order_id": STR}, required=["order_id"])
    assert rules(BASE, new) == [("amount", "field-removed")]


def test_a_renamed_field_breaks_twice_removed_and_required_added():
    new = obj({"order_id": STR, "amount_cents": INT}, required=["order_id", "amount_cents"])
    assert rules(BASE, new) == [("amount", "field-removed"), ("amount_cents", "required-field-added")]


def test_a_type_change_breaks():
    new = obj({"order_id": STR, "amount": STR}, required=["order_id", "amount"])
    assert rules(BASE, new) == [("amount", "type-changed")]


def test_an_integer_widened_to_a_number_is_compatible_but_not_the_reverse():
    number = obj({"order_id": STR, "amount": {"type": "number"}}, required=["order_id", "amount"])
    assert rules(BASE, number) == []
    assert rules(number, BASE) == [("amount", "type-changed")]


def test_a_field_made_nullable_is_compatible_and_nullable_made_plain_breaks():
    nullable = obj({"order_id": STR, "amount": {"anyOf": [INT, {"type": "null"}]}}, required=["order_id", "amount"])
    assert rules(BASE, nullable) == []
    assert rules(nullable, BASE) == [("amount", "type-changed")]


def test_an_enum_value_removed_breaks_and_one_added_is_compatible():
    old = obj({"reason": {"type": "string", "enum": ["over_limit", "unsupported_currency"]}}, required=["reason"])
    fewer = obj({"reason": {"type": "string", "enum": ["over_limit"]}}, required=["reason"])
    more = obj({"reason": {"type": "string", "enum": ["over_limit", "unsupported_currency", "fraud"]}}, required=["reason"])
    assert rules(old, fewer) == [("reason", "enum-value-removed")]
    assert rules(old, more) == []


def test_a_const_is_an_enum_of_one_value():
    old = obj({"channel": {"type": "string", "const": "email"}}, required=["channel"])
    assert rules(old, obj({"channel": {"type": "string", "enum": ["email", "sms"]}}, required=["channel"])) == []
    assert rules(old, obj({"channel": {"type": "string", "const": "sms"}}, required=["channel"])) == [("channel", "enum-value-removed")]


def test_a_free_string_restricted_to_an_enum_breaks():
    old = obj({"reason": STR}, required=["reason"])
    new = obj({"reason": {"type": "string", "enum": ["over_limit"]}}, required=["reason"])
    assert rules(old, new) == [("reason", "enum-narrowed")]


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ({"maxLength": 64}, {"maxLength": 32}, "maxLength-tightened"),
        ({}, {"maxLength": 64}, "maxLength-tightened"),
        ({"minLength": 1}, {"minLength": 2}, "minLength-tightened"),
        ({}, {"pattern": "^[A-Z]+$"}, "pattern-changed"),
        ({"pattern": "^[A-Z]+$"}, {"pattern": "^[A-Z]{3}$"}, "pattern-changed"),
        ({}, {"format": "date-time"}, "format-changed"),
    ],
)
def test_a_tighter_string_constraint_breaks(old, new, rule):
    assert rules(obj({"s": {"type": "string", **old}}, ["s"]), obj({"s": {"type": "string", **new}}, ["s"])) == [("s", rule)]


@pytest.mark.parametrize(
    ("old", "new"),
    [({"maxLength": 32}, {"maxLength": 64}), ({"maxLength": 32}, {}), ({"minLength": 2}, {"minLength": 1}), ({"pattern": "^[A-Z]+$"}, {})],
)
def test_a_looser_string_constraint_is_compatible(old, new):
    assert rules(obj({"s": {"type": "string", **old}}, ["s"]), obj({"s": {"type": "string", **new}}, ["s"])) == []


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ({"minimum": 0}, {"minimum": 1}, "minimum-tightened"),
        ({"minimum": 0}, {"exclusiveMinimum": 0}, "minimum-tightened"),
        ({}, {"minimum": 0}, "minimum-tightened"),
        ({"maximum": 100}, {"maximum": 99}, "maximum-tightened"),
        ({"maximum": 100}, {"exclusiveMaximum": 100}, "maximum-tightened"),
        ({}, {"multipleOf": 5}, "multipleOf-tightened"),
    ],
)
def test_a_tighter_number_constraint_breaks(old, new, rule):
    assert rules(obj({"n": {"type": "integer", **old}}, ["n"]), obj({"n": {"type": "integer", **new}}, ["n"])) == [("n", rule)]


@pytest.mark.parametrize(
    ("old", "new"),
    [({"minimum": 1}, {"minimum": 0}), ({"exclusiveMinimum": 0}, {"minimum": 0}), ({"maximum": 10}, {}), ({"multipleOf": 10}, {"multipleOf": 5})],
)
def test_a_looser_number_constraint_is_compatible(old, new):
    assert rules(obj({"n": {"type": "integer", **old}}, ["n"]), obj({"n": {"type": "integer", **new}}, ["n"])) == []


def test_array_limits_and_item_schemas_are_compared():
    old = obj({"items": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 100}}, ["items"])
    new = obj({"items": {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 2, "maxItems": 50, "uniqueItems": True}}, ["items"])
    assert sorted(rules(old, new)) == [
        ("items", "maxItems-tightened"), ("items", "minItems-tightened"), ("items", "uniqueItems-tightened"), ("items[]", "maxLength-tightened"),
    ]


def test_nested_models_are_followed_through_refs_with_the_field_path():
    def schema(line_required):
        line = obj({"sku": STR, "quantity": INT}, required=line_required)
        return {**obj({"lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}}}, ["lines"]), "$defs": {"Line": line}}

    assert rules(schema(["sku"]), schema(["sku", "quantity"])) == [("lines[].quantity", "field-made-required")]
    assert rules(schema(["sku"]), schema(["sku"])) == []


def test_a_renamed_definition_with_the_same_shape_is_compatible():
    old = {**obj({"line": {"$ref": "#/$defs/Line"}}, ["line"]), "$defs": {"Line": obj({"sku": STR}, ["sku"])}}
    new = {**obj({"line": {"$ref": "#/$defs/OrderLine"}}, ["line"]), "$defs": {"OrderLine": obj({"sku": STR}, ["sku"])}}
    assert rules(old, new) == []


def test_a_recursive_schema_terminates():
    tree = {**obj({"children": {"type": "array", "items": {"$ref": "#"}}}, []), "$defs": {}}
    assert rules(tree, tree) == []


def test_refusing_unknown_fields_that_were_accepted_breaks():
    open_schema = {**BASE, "additionalProperties": True}
    assert rules(open_schema, BASE) == [("", "extra-fields-refused")]
    assert rules(BASE, open_schema) == []


def test_documentation_changes_are_compatible():
    new = json.loads(json.dumps(BASE))
    new["properties"]["amount"] |= {"description": "now documented", "examples": [3], "title": "Amount", "x-personal": True}
    assert rules(BASE, new) == []


def test_an_unknown_keyword_that_changes_is_reported_rather_than_assumed_harmless():
    new = obj({"order_id": {**STR, "contains": {"const": "x"}}, "amount": INT}, required=["order_id", "amount"])
    assert rules(BASE, new) == [("order_id", "unsupported-change")]


def test_a_field_that_accepted_anything_now_typed_breaks():
    assert rules(obj({"v": {}}, ["v"]), obj({"v": INT}, ["v"])) == [("v", "type-narrowed")]


def test_a_tighter_optional_field_names_the_constraint_not_just_the_type():
    old = obj({"note": {"anyOf": [{"type": "string", "maxLength": 64}, {"type": "null"}], "default": None}}, [])
    new = obj({"note": {"anyOf": [{"type": "string", "maxLength": 32}, {"type": "null"}], "default": None}}, [])
    assert rules(old, new) == [("note", "maxLength-tightened")]


def test_an_alternative_dropped_from_a_union_breaks():
    old = obj({"v": {"anyOf": [STR, INT]}}, ["v"])
    new = obj({"v": {"anyOf": [STR, {"type": "boolean"}]}}, ["v"])
    assert rules(old, new) == [("v", "type-changed")]


def test_the_next_topic_version_is_where_a_breaking_change_goes():
    assert next_topic_version("orders.placed.v1") == "orders.placed.v2"
    assert next_topic_version("a.b.v9") == "a.b.v10"


# ---- revisions on disk ----------------------------------------------------------------------------------------------


class ThingHappened(Event):
    """A test event."""

    order_id: str = Field(description="The order.", examples=["ord-1"], min_length=1, max_length=64)
    amount: int = Field(description="How much.", examples=[5], ge=0)


class ThingHappenedWithNote(Event):
    """Compatible: an optional field with a default."""

    order_id: str = Field(description="The order.", examples=["ord-1"], min_length=1, max_length=64)
    amount: int = Field(description="How much.", examples=[5], ge=0)
    note: str = Field("", description="A note.", examples=["gift"], max_length=200)


class ThingHappenedWithoutAmount(Event):
    """Breaking: a field removed, a constraint tightened and a required field added."""

    order_id: str = Field(description="The order.", examples=["ord-1"], min_length=1, max_length=32)
    reason: str = Field(description="Why.", examples=["because"])


def registry_of(model) -> Registry:
    return Registry([Topic("things.happened.v1", model, "order_id", "tester", "Things.")])


def test_export_writes_revision_1_then_nothing_while_the_model_is_unchanged(tmp_path):
    written, problems = export_schemas(registry_of(ThingHappened), tmp_path)
    assert problems == [] and [(w.topic, w.revision) for w in written] == [("things.happened.v1", 1)]
    document = json.loads((tmp_path / "things.happened.v1" / "1.json").read_text())
    assert document["$schema"] == DIALECT == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == "urn:eventfleet:schema:things.happened.v1/1"
    assert export_schemas(registry_of(ThingHappened), tmp_path) == ([], [])
    assert revision_problems(registry_of(ThingHappened), tmp_path) == []


def test_a_compatible_change_is_stale_until_exported_as_revision_2_and_revision_1_is_kept(tmp_path):
    export_schemas(registry_of(ThingHappened), tmp_path)
    first = (tmp_path / "things.happened.v1" / "1.json").read_text()
    assert [p.rule for p in revision_problems(registry_of(ThingHappenedWithNote), tmp_path)] == ["schema-stale"]
    written, problems = export_schemas(registry_of(ThingHappenedWithNote), tmp_path)
    assert problems == [] and [w.revision for w in written] == [2]
    assert (tmp_path / "things.happened.v1" / "1.json").read_text() == first
    assert revision_problems(registry_of(ThingHappenedWithNote), tmp_path) == []


def test_a_breaking_model_change_fails_the_check_and_export_refuses_it(tmp_path):
    export_schemas(registry_of(ThingHappened), tmp_path)
    problems = revision_problems(registry_of(ThingHappenedWithoutAmount), tmp_path)
    assert sorted((p.field, p.rule) for p in problems) == [
        ("amount", "field-removed"), ("order_id", "maxLength-tightened"), ("reason", "required-field-added"),
    ]
    assert all(p.topic == "things.happened.v1" and "things.happened.v2" in p.fix and "new class" in p.fix for p in problems)
    written, refused = export_schemas(registry_of(ThingHappenedWithoutAmount), tmp_path)
    assert written == [] and len(refused) == 3
    assert sorted(p.name for p in (tmp_path / "things.happened.v1").iterdir()) == ["1.json"]


def test_a_committed_revision_that_breaks_an_earlier_one_fails(tmp_path):
    topic = registry_of(ThingHappenedWithoutAmount).named("things.happened.v1")
    folder = tmp_path / "things.happened.v1"
    folder.mkdir()
    (folder / "1.json").write_text(json.dumps(revision_document(registry_of(ThingHappened).topics[0], 1)))
    (folder / "2.json").write_text(json.dumps(revision_document(topic, 2)))  # written by hand, past `fleet contracts export`
    problems = revision_problems(registry_of(ThingHappenedWithoutAmount), tmp_path)
    assert {p.rule for p in problems} == {"field-removed", "maxLength-tightened", "required-field-added"}
    assert all("revision 2 is not backward compatible with revision 1" in p.detail for p in problems)


def test_every_earlier_revision_counts_not_only_the_latest(tmp_path):
    export_schemas(registry_of(ThingHappened), tmp_path)
    export_schemas(registry_of(ThingHappenedWithNote), tmp_path)
    (tmp_path / "things.happened.v1" / "2.json").unlink()  # as if 2 never had `amount`: compare to 1 too
    problems = revision_problems(registry_of(ThingHappenedWithoutAmount), tmp_path)
    assert any(p.rule == "field-removed" and "revision 1" in p.detail for p in problems)


def test_a_removed_revision_is_a_gap_that_fails_and_blocks_export(tmp_path):
    export_schemas(registry_of(ThingHappened), tmp_path)
    export_schemas(registry_of(ThingHappenedWithNote), tmp_path)
    (tmp_path / "things.happened.v1" / "1.json").unlink()
    problems = revision_problems(registry_of(ThingHappenedWithNote), tmp_path)
    assert [(p.rule, "1.json" in p.detail) for p in problems] == [("revision-removed", True)]
    assert "restore it from git" in problems[0].fix
    written, refused = export_schemas(registry_of(ThingHappenedWithNote), tmp_path)
    assert written == [] and [p.rule for p in refused] == ["revision-removed"]


def test_a_missing_export_a_stray_file_and_a_tampered_header_fail(tmp_path):
    assert [p.rule for p in revision_problems(registry_of(ThingHappened), tmp_path)] == ["schema-not-exported"]
    export_schemas(registry_of(ThingHappened), tmp_path)
    path = tmp_path / "things.happened.v1" / "1.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps(document | {"$id": "urn:other", "$schema": "http://json-schema.org/draft-07/schema#"}))
    (tmp_path / "things.happened.v1" / "latest.json").write_text("{}")
    assert sorted(p.rule for p in revision_problems(registry_of(ThingHappened), tmp_path)) == ["revision-dialect", "revision-file-name", "revision-id"]


def test_an_invalid_json_schema_revision_fails(tmp_path):
    export_schemas(registry_of(ThingHappened), tmp_path)
    path = tmp_path / "things.happened.v1" / "1.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"type": "thing"}))
    assert "revision-invalid" in {p.rule for p in revision_problems(registry_of(ThingHappened), tmp_path)}


def test_load_revisions_reads_files_by_number(tmp_path):
    export_schemas(registry_of(ThingHappened), tmp_path)
    export_schemas(registry_of(ThingHappenedWithNote), tmp_path)
    revisions, problems = load_revisions(registry_of(ThingHappened).topics[0], tmp_path)
    assert sorted(revisions) == [1, 2] and problems == []


def test_export_writes_into_the_working_directorys_contracts_schemas_never_into_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the checkout's top folder, where `fleet contracts export` runs
    written, problems = export_schemas(registry_of(ThingHappened))
    assert problems == [] and [w.path for w in written] == [Path("contracts/schemas/things.happened.v1/1.json")]
    assert (tmp_path / "contracts" / "schemas" / "things.happened.v1" / "1.json").is_file()
    assert not (SCHEMAS_DIR / "things.happened.v1").exists()


# ---- documented fields and examples ---------------------------------------------------------------------------------


class Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(description="The product.", examples=["SKU-1"])
    quantity: int = Field(description="", examples=[1])  # empty description


class Undocumented(Event):
    """Fields without description or example, here and in a nested model."""

    order_id: str = Field(description="The order.", examples=["ord-1"])
    lines: tuple[Line, ...] = Field(description="The lines.")  # no example
    maybe: Optional[Line] = Field(None, examples=[None])  # no description


def test_every_field_needs_a_description_and_an_example_nested_models_too():
    problems = documentation_problems(registry_of(Undocumented))
    assert sorted((p.field, p.rule) for p in problems) == [
        ("lines", "field-example"), ("lines[].quantity", "field-description"), ("maybe", "field-description"),
    ]
    assert all("contracts/events.py" in p.fix for p in problems)


class BadExamples(Event):
    """Examples that contradict their constraints."""

    order_id: str = Field(description="The order.", examples=["ord-1", ""], min_length=1)
    currency: str = Field(description="ISO code.", examples=["euro"], pattern=r"^[A-Z]{3}$")
    kind: Literal["a", "b"] = Field(description="Kind.", examples=["c"])


def test_an_example_that_breaks_its_field_schema_fails_naming_the_field():
    problems = example_problems(registry_of(BadExamples))
    invalid = sorted(p.field for p in problems if p.rule == "example-invalid")
    assert invalid == ["currency", "kind", "order_id"]
    assert any("example 2" in p.detail for p in problems if p.field == "order_id")
    assert any(p.rule == "example-event-invalid" for p in problems)


def test_field_examples_are_checked_against_a_schema_file_too():
    schema = {"$schema": DIALECT, **obj({"n": {"type": "integer", "maximum": 3, "examples": [2, 7]}}, ["n"])}
    assert [(p.field, p.rule) for p in field_example_problems("t.x.v1", schema)] == [("n", "example-invalid")]


def test_nested_model_examples_are_checked_in_their_definition():
    schema = {**obj({"line": {"$ref": "#/$defs/Line"}}, ["line"]),
              "$defs": {"Line": obj({"sku": {"type": "string", "minLength": 2, "examples": ["x"]}}, ["sku"])}}
    assert [(p.field, p.rule) for p in field_example_problems("t.x.v1", schema)] == [("Line.sku", "example-invalid"),
                                                                                      ("Line.sku", "example-event-invalid")]


# ---- the fleet's own contracts -----------------------------------------------------------------------------------------


def test_the_fleets_contracts_pass_every_rule():
    assert contract_problems() == []


def test_every_registry_topic_has_its_committed_revisions():
    for topic in REGISTRY:
        revisions, problems = load_revisions(topic, SCHEMAS_DIR)
        assert problems == [] and 1 in revisions, topic.name
