"""Contract governance: schema revisions, documented fields, valid examples, and compatibility rules.

Each topic's JSON Schema is exported as numbered revisions."""

from __future__ import annotations

import importlib.resources
import json
import re
import types
import typing
from collections import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from pydantic import BaseModel

from .registry import REGISTRY, Registry, Topic, UnregisteredEvent
from .upcasters import UPCASTERS, Upcasters

__all__ = [
    "DIALECT",
    "EXPORT_DIR",
    "SCHEMAS_DIR",
    "Incompatibility",
    "Problem",
    "Written",
    "compatibility",
    "contract_problems",
    "documentation_problems",
    "draft_topics",
    "example_problems",
    "export_schemas",
    "field_example_problems",
    "load_revisions",
    "next_topic_version",
    "revision_document",
    "revision_id",
    "revision_problems",
    "scaffolded_problems",
    "schema_body",
    "superseded_problems",
    "upcaster_problems",
]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# The revisions this package ships (package data), wherever it is installed: the checkout, or a site-packages.
SCHEMAS_DIR = Path(str(importlib.resources.files("contracts") / "schemas"))
# Where `fleet contracts export` writes new revisions: the checkout's, from the working directory (its top folder).
EXPORT_DIR = Path("contracts") / "schemas"
REVISION_FILE = re.compile(r"^(?P<revision>[1-9][0-9]*)\.json$")
EXPORT = "run `fleet contracts export` and commit contracts/schemas/"


@dataclass(frozen=True, order=True)
class Problem:
    """One failed rule: where (topic, field), which rule, what is wrong, and how to fix it."""

    topic: str
    field: str
    rule: str
    detail: str
    fix: str

    def __str__(self) -> str:
        where = self.topic + (f" field {self.field}" if self.field else "")
        return f"{where}: [{self.rule}] {self.detail}\n    fix: {self.fix}"


@dataclass(frozen=True)
class Incompatibility:
    """A way the new schema refuses a record that the old schema accepts; `path` is the field (`items[].sku`),
    "" for the event."""

    path: str
    rule: str
    detail: str


@dataclass(frozen=True)
class Written:
    """A revision file that `export_schemas` wrote."""

    topic: str
    revision: int
    path: Path
    draft: bool = False  # the draft revision 1 of a version `fleet contracts bump` wrote, rewritten from its model


def draft_topics(registry: Registry = REGISTRY, upcasters: Upcasters = UPCASTERS) -> frozenset[str]:
    """The versions whose upcaster from the version before is still the stub `fleet contracts bump` wrote.

    Until that upcaster is written, such a version is a draft: `fleet check` fails on the stub, so nothing can have
    written or read it yet, and its only revision (1.json, written by the bump from a copy of the version before) is
    rewritten by `fleet contracts export` as its model changes. Once the upcaster is written, revision 1 is kept for
    good like any other."""
    found = set()
    for step in upcasters:
        if step.scaffolded:
            try:
                found.add(registry.of(step.target).name)
            except UnregisteredEvent:
                continue
    return frozenset(found)


# --------------------------------------------------------------------------------------------------------------------
# Revisions: contracts/schemas/<topic>/<revision>.json, Draft 2020-12, never overwritten.


def revision_id(topic: Topic, revision: int) -> str:
    """`$id` of a revision: the topic's schema id (its `ce_dataschema`) and the revision, e.g.
    `urn:eventfleet:schema:<topic>/3`.

    A `#3` fragment is not allowed in a 2020-12 `$id`, hence the path-like suffix, which mirrors the file's path."""
    return f"{topic.schema_id}/{revision}"


def schema_body(topic_or_document: Topic | dict) -> dict:
    """The part of a schema that revisions compare: the model's JSON Schema, without `$schema` and `$id`."""
    if isinstance(topic_or_document, Topic):
        return topic_or_document.model.model_json_schema(mode="validation")
    return {k: v for k, v in topic_or_document.items() if k not in ("$schema", "$id")}


def revision_document(topic: Topic, revision: int, body: dict | None = None) -> dict:
    """The whole file of one revision: `$schema`, `$id`, then the model's schema."""
    return {"$schema": DIALECT, "$id": revision_id(topic, revision), **(schema_body(topic) if body is None else body)}


def _dump(document: dict) -> str:
    return (
        json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    )  # the model's field order, `$schema` and `$id` first


def _topic_dir(schemas_dir: Path, topic: Topic) -> Path:
    return schemas_dir / topic.name


def _shown(path: Path) -> str:
    """A path as the messages show it: relative to the working directory when it is under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_revisions(topic: Topic, schemas_dir: Path = SCHEMAS_DIR) -> tuple[dict[int, dict], list[Problem]]:
    """Every revision file of a topic, by number, and what is wrong with the folder (gaps,
    stray or unreadable files)."""
    folder = _topic_dir(schemas_dir, topic)
    revisions: dict[int, dict] = {}
    problems: list[Problem] = []
    if not folder.is_dir():
        return revisions, problems
    present: set[int] = set()
    for path in sorted(folder.iterdir()):
        match = REVISION_FILE.match(path.name)
        if not match or not path.is_file():
            problems.append(
                Problem(
                    topic.name,
                    "",
                    "revision-file-name",
                    f"{_shown(path)} is not a revision file <N>.json",
                    "remove it: the folder holds only 1.json, 2.json, ...",
                )
            )
            continue
        present.add(int(match["revision"]))
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            problems.append(
                Problem(
                    topic.name,
                    "",
                    "revision-unreadable",
                    f"{_shown(path)} is not JSON ({error})",
                    "restore it from git: a revision is never edited",
                )
            )
            continue
        revisions[int(match["revision"])] = document
    for missing in sorted(set(range(1, max(present, default=0) + 1)) - present):
        problems.append(
            Problem(
                topic.name,
                "",
                "revision-removed",
                f"{_shown(folder / f'{missing}.json')} is missing "
                f"(revisions {', '.join(map(str, sorted(present)))} exist)",
                "restore it from git: every revision ever written is kept, so old records stay readable",
            )
        )
    return revisions, problems


def _check_schema(document: dict) -> str | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(document)
    except SchemaError as error:
        return error.message
    return None


def revision_problems(
    registry: Registry = REGISTRY, schemas_dir: Path = SCHEMAS_DIR, upcasters: Upcasters = UPCASTERS
) -> list[Problem]:
    """Each topic has revisions 1..N with no gap; each is a valid Draft 2020-12 schema with the right `$schema` and
    `$id`; revision N is the model's schema; each revision (and the model) reads every record of every earlier one.
    A draft version's only revision (`draft_topics`) need only be its model's schema."""
    problems: list[Problem] = []
    drafts = draft_topics(registry, upcasters)
    for topic in registry:
        revisions, found = load_revisions(topic, schemas_dir)
        problems += found
        if not revisions:
            if not found:
                problems.append(
                    Problem(
                        topic.name,
                        "",
                        "schema-not-exported",
                        f"no revision in {_shown(_topic_dir(schemas_dir, topic))}",
                        EXPORT,
                    )
                )
            continue
        for number, document in sorted(revisions.items()):
            where = _shown(_topic_dir(schemas_dir, topic) / f"{number}.json")
            if document.get("$schema") != DIALECT:
                problems.append(
                    Problem(
                        topic.name,
                        "",
                        "revision-dialect",
                        f"{where} has $schema {document.get('$schema')!r}, not {DIALECT!r}",
                        "restore it from git: revisions are written by `fleet contracts export` only",
                    )
                )
            if document.get("$id") != revision_id(topic, number):
                problems.append(
                    Problem(
                        topic.name,
                        "",
                        "revision-id",
                        f"{where} has $id {document.get('$id')!r}, not {revision_id(topic, number)!r}",
                        "restore it from git: revisions are written by `fleet contracts export` only",
                    )
                )
            if (error := _check_schema(document)) is not None:
                problems.append(
                    Problem(
                        topic.name,
                        "",
                        "revision-invalid",
                        f"{where} is not a valid Draft 2020-12 schema: {error}",
                        "restore it from git: revisions are written by `fleet contracts export` only",
                    )
                )
        numbers = sorted(revisions)
        for position, newer in enumerate(numbers):
            for older in numbers[:position]:
                problems += _breaks(
                    topic,
                    schema_body(revisions[older]),
                    schema_body(revisions[newer]),
                    f"revision {older}",
                    f"revision {newer}",
                )
        latest = numbers[-1]
        model = schema_body(topic)
        if schema_body(revisions[latest]) != model and topic.name in drafts and numbers == [1]:
            problems.append(
                Problem(
                    topic.name,
                    "",
                    "schema-stale",
                    f"{topic.model.__name__}'s JSON Schema differs from 1.json, the draft revision "
                    "`fleet contracts bump` wrote",
                    f"{EXPORT} (it rewrites a draft revision until the upcaster into {topic.name} is written)",
                )
            )
        elif schema_body(revisions[latest]) != model:
            breaking = [
                p
                for older in numbers
                for p in _breaks(
                    topic, schema_body(revisions[older]), model, f"revision {older}", f"model {topic.model.__name__}"
                )
            ]
            problems += breaking
            if not breaking:
                problems.append(
                    Problem(
                        topic.name,
                        "",
                        "schema-stale",
                        f"{topic.model.__name__}'s JSON Schema differs from the latest revision {latest}.json "
                        "(a compatible change)",
                        EXPORT,
                    )
                )
    return problems


def next_topic_version(name: str) -> str:
    """`orders.placed.v1` → `orders.placed.v2`: where a breaking change goes."""
    base, _, version = name.rpartition(".v")
    return f"{base}.v{int(version) + 1}"


def _breaking_fix(topic: Topic) -> str:
    return (
        f"revert the change (to {topic.model.__name__}, or to the revision file written past "
        f"`fleet contracts export`); a breaking change is a new topic version instead: a new class "
        f"(e.g. {topic.model.__name__}V2) on a new topic `{next_topic_version(topic.name)}` in contracts/registry.py, "
        f"published beside `{topic.name}` until every consumer has moved (see docs/contracts.md)"
    )


def _breaks(topic: Topic, old: dict, new: dict, old_name: str, new_name: str) -> list[Problem]:
    return [
        Problem(
            topic.name,
            found.path or "(event)",
            found.rule,
            f"{new_name} is not backward compatible with {old_name}: {found.detail}, "
            f"so a consumer on it would refuse {old_name}'s records",
            _breaking_fix(topic),
        )
        for found in compatibility(old, new)
    ]


def export_schemas(
    registry: Registry = REGISTRY, schemas_dir: Path = EXPORT_DIR, upcasters: Upcasters = UPCASTERS
) -> tuple[list[Written], list[Problem]]:
    """Writes revision N+1 of each topic whose model's schema differs from revision N (1 for a new topic).

    Never overwrites a file, but the draft revision 1 of a version whose upcaster is still the stub `fleet contracts
    bump` wrote (`draft_topics`). Refuses a topic whose history has a problem or whose change breaks an earlier
    revision."""
    written: list[Written] = []
    problems: list[Problem] = []
    drafts = draft_topics(registry, upcasters)
    for topic in registry:
        revisions, found = load_revisions(topic, schemas_dir)
        if found:
            problems += found
            continue
        body = schema_body(topic)
        if revisions and schema_body(revisions[max(revisions)]) == body:
            continue
        if topic.name in drafts and set(revisions) == {1}:
            path = _topic_dir(schemas_dir, topic) / "1.json"
            path.write_text(_dump(revision_document(topic, 1, body)), encoding="utf-8")
            written.append(Written(topic.name, 1, path, draft=True))
            continue
        breaking = [
            p
            for older in sorted(revisions)
            for p in _breaks(
                topic, schema_body(revisions[older]), body, f"revision {older}", f"model {topic.model.__name__}"
            )
        ]
        if breaking:
            problems += breaking
            continue
        number = max(revisions, default=0) + 1
        path = _topic_dir(schemas_dir, topic) / f"{number}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as file:  # "x": an existing revision is never overwritten
            file.write(_dump(revision_document(topic, number, body)))
        written.append(Written(topic.name, number, path))
    return written, problems


# --------------------------------------------------------------------------------------------------------------------
# Documentation: every field of every event model, nested models included, has a description and an example.


def _nested_models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for argument in typing.get_args(annotation):
        yield from _nested_models(argument)


def _container_suffix(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, (abc.Sequence, abc.Set)) and not issubclass(origin, str):
        return "[]"
    if isinstance(origin, type) and issubclass(origin, abc.Mapping):
        return ".*"
    if origin in (typing.Union, types.UnionType):
        return "".join(dict.fromkeys(_container_suffix(a) for a in typing.get_args(annotation) if a is not type(None)))
    return ""


def documentation_problems(registry: Registry = REGISTRY) -> list[Problem]:
    """Every field of every topic's model, and of the models nested in it,
    has a non-empty description and an example."""
    problems: list[Problem] = []
    for topic in registry:
        problems.extend(_undocumented_fields(topic.name, topic.model))
    return problems


def _undocumented_fields(topic: str, root: type[BaseModel]) -> list[Problem]:
    """The fields of `root`, and of the models nested in it, that lack a description or an example."""
    problems: list[Problem] = []
    seen: set[type] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            where = f"{model.__name__}.{name}"
            if not (field.description or "").strip():
                problems.append(
                    Problem(
                        topic,
                        path,
                        "field-description",
                        f"{where} has no description",
                        f"add Field(description=...) to {where} in contracts/events.py",
                    )
                )
            if not field.examples:
                problems.append(
                    Problem(
                        topic,
                        path,
                        "field-example",
                        f"{where} has no example",
                        f"add Field(examples=[...]) to {where} in contracts/events.py",
                    )
                )
            for nested in _nested_models(field.annotation):
                walk(nested, f"{path}{_container_suffix(field.annotation)}.")

    walk(root, "")
    return problems


# --------------------------------------------------------------------------------------------------------------------
# Examples: each field's examples validate against its subschema, and the first examples together make a valid event.


def _validator(schema: dict, root: dict):
    from jsonschema import Draft202012Validator

    document = {"$schema": DIALECT, **({"$defs": root["$defs"]} if "$defs" in root else {}), **schema}
    return Draft202012Validator(document, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _object_schemas(root: dict) -> Iterator[tuple[str, dict]]:
    """The event's own schema, then each nested model's (`$defs`), with the field path prefix where it is used."""
    yield "", root
    for name, schema in sorted(root.get("$defs", {}).items()):
        yield f"{name}.", schema


def field_example_problems(topic_name: str, root: dict) -> list[Problem]:
    """Pure: every example of every property validates against that property's subschema; the first examples of an
    object's properties together validate against the object's schema. Works on a revision file or a model's schema."""
    problems: list[Problem] = []
    for prefix, schema in _object_schemas(root):
        properties = schema.get("properties", {})
        instance: dict = {}
        for name, subschema in properties.items():
            examples = subschema.get("examples") or []
            if examples:
                instance[name] = examples[0]
            for index, example in enumerate(examples):
                for error in _validator(subschema, root).iter_errors(example):
                    problems.append(
                        Problem(
                            topic_name,
                            f"{prefix}{name}",
                            "example-invalid",
                            f"example {index + 1} {json.dumps(example)} does not validate against the field's schema: "
                            f"{error.message}",
                            "fix the example (or the constraint) in contracts/events.py",
                        )
                    )
        if not properties or set(schema.get("required", ())) - set(instance):
            continue  # a missing example is documentation_problems' finding
        target = schema if not prefix else {"$ref": f"#/$defs/{prefix[:-1]}"}
        for error in _validator(target, root).iter_errors(instance):
            field = ".".join(str(part) for part in error.absolute_path) or "(event)"
            problems.append(
                Problem(
                    topic_name,
                    f"{prefix}{field}",
                    "example-event-invalid",
                    f"the fields' first examples together do not make a valid {schema.get('title', 'object')}: "
                    f"{error.message}",
                    "make the first examples consistent with each other and the constraints in contracts/events.py",
                )
            )
    return problems


def example_problems(registry: Registry = REGISTRY) -> list[Problem]:
    """`field_example_problems` on each topic's schema (the one `fleet contracts export` writes), and the event built
    from the fields' first examples is accepted by the model itself."""
    from pydantic import ValidationError

    problems: list[Problem] = []
    for topic in registry:
        root = revision_document(topic, 1)
        problems += field_example_problems(topic.name, root)
        instance = {name: field.examples[0] for name, field in topic.model.model_fields.items() if field.examples}
        if len(instance) == len(topic.model.model_fields):
            try:
                topic.model.model_validate(instance)
            except ValidationError as error:
                for item in error.errors():
                    problems.append(
                        Problem(
                            topic.name,
                            ".".join(map(str, item["loc"])) or "(event)",
                            "example-event-invalid",
                            f"{topic.model.__name__} refuses the event built from its fields' first examples: "
                            f"{item['msg']}",
                            "make the first examples consistent with the model's validators in contracts/events.py",
                        )
                    )
    return problems


# --------------------------------------------------------------------------------------------------------------------
# Versions: a superseded version is read through upcasters, as the current one, until it is retired.


def scaffolded_problems(registry: Registry = REGISTRY, upcasters: Upcasters = UPCASTERS) -> list[Problem]:
    """Pure: no upcaster is still the stub `fleet contracts bump` wrote (registered with `scaffolded=True`)."""
    problems: list[Problem] = []
    for step in upcasters:
        if not step.scaffolded:
            continue
        try:
            where = registry.of(step.source).name
        except UnregisteredEvent:
            where = "-"
        problems.append(
            Problem(
                where,
                "",
                "upcaster-scaffolded",
                f"the upcaster {step.name} ({step.source.__name__} → {step.target.__name__}) is the stub "
                "`fleet contracts bump` wrote: it raises NotImplementedError",
                f"write {step.name} in contracts/upcasters.py (a pure function: its vectors in contracts/vectors/"
                "upcasters/ say what it must return, and tests/unit/test_upcaster_*.py holds it to them), then drop "
                "`scaffolded=True` from its @UPCASTERS.register",
            )
        )
    return problems


def superseded_problems(
    registry: Registry, upcasters: Upcasters, lags: Mapping[str, Mapping[str, int]] | None
) -> list[Problem]:
    """Pure: every superseded version, not retired, that may still be read has an upcaster path to the current version
    of its event, so its records reach the handlers declared on the current model.

    `lags` maps a topic to its consumer groups' lag on it (`fleet contracts retire` reads them from the broker): a
    group with lag may still read it. None: not known (`fleet check`, offline), so every consumer the registry lists
    for the topic may."""
    problems: list[Problem] = []
    for topic in registry:
        if topic.retired or not registry.is_superseded(topic):
            continue
        current = registry.current(topic)
        if upcasters.path(topic.model, current.model) is not None:
            continue
        if lags is None:
            readers = ", ".join(topic.consumers)
            who = f"its consumers may still read it ({readers})"
        else:
            lagging = {group: lag for group, lag in (lags.get(topic.name) or {}).items() if lag > 0}
            readers = ", ".join(f"{group} (lag {lag})" for group, lag in sorted(lagging.items()))
            who = f"consumer groups still have records to read on it: {readers}"
        if not readers:
            continue
        problems.append(
            Problem(
                topic.name,
                "",
                "upcaster-missing",
                f"{topic.name} is superseded by {current.name}, and {who}; but no upcaster leads from "
                f"{topic.model.__name__} to {current.model.__name__}, so a handler declared on "
                f"{current.model.__name__} never gets them",
                f"register the missing step(s) in contracts/upcasters.py (`fleet contracts bump` scaffolds one beside "
                f"each new version), or retire {topic.name} once nothing reads it (`fleet contracts retire "
                f"{topic.name}`)",
            )
        )
    return problems


def upcaster_problems(registry: Registry = REGISTRY, upcasters: Upcasters = UPCASTERS) -> list[Problem]:
    """Every upcaster is written (`scaffolded_problems`), and every superseded version that its consumers may still
    read reaches the current one (`superseded_problems`, with lags unknown)."""
    return scaffolded_problems(registry, upcasters) + superseded_problems(registry, upcasters, None)


def contract_problems(registry: Registry = REGISTRY, schemas_dir: Path = SCHEMAS_DIR) -> list[Problem]:
    """Every contracts-side rule: documented fields, valid examples, exported revisions that are current and
    compatible, upcasters written and leading every superseded version to the current one."""
    return (
        documentation_problems(registry)
        + example_problems(registry)
        + revision_problems(registry, schemas_dir)
        + upcaster_problems(registry)
    )


# --------------------------------------------------------------------------------------------------------------------
# Compatibility: may a consumer on `new` read every record that `old` accepts? Pure functions over JSON Schemas.

# Keywords that say nothing about which values are valid.
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$comment",
        "$defs",
        "definitions",
        "$id",
        "$schema",
        "$anchor",
        "discriminator",
        "contentMediaType",
        "contentEncoding",
    }
)
# Keywords this module compares; a change to any other keyword is reported, since it cannot be proven harmless.
COMPARED = frozenset(
    {
        "$ref",
        "allOf",
        "anyOf",
        "oneOf",
        "type",
        "enum",
        "const",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
    }
)
LOWER_LIMITS = {"minLength": "length", "minItems": "number of items", "minProperties": "number of fields"}
UPPER_LIMITS = {"maxLength": "length", "maxItems": "number of items", "maxProperties": "number of fields"}


def compatibility(old: dict | bool, new: dict | bool) -> list[Incompatibility]:
    """Every way `new` refuses a record `old` accepts (empty: `new` is backward compatible with `old`).

    Conservative: a change this cannot prove harmless is reported. Covers the JSON Schema that pydantic writes:
    `$ref` into `$defs`, `anyOf`/`oneOf` (optional fields), types, `enum`/`const`, and the keywords of strings,
    numbers, arrays and objects."""
    return _Comparison(old, new).compare(old, new, "")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class _Comparison:
    def __init__(self, old_root: Any, new_root: Any) -> None:
        self.roots = (old_root, new_root)
        self.active: set[tuple[int, int]] = set()

    def resolve(self, schema: Any, side: int) -> Any:
        """Follows local `$ref`s (siblings are kept, as 2020-12 applies both) and merges `allOf` into one schema."""
        for _ in range(64):
            if not isinstance(schema, dict):
                return schema
            if "$ref" in schema:
                target = self.pointer(schema["$ref"], side)
                siblings = {k: v for k, v in schema.items() if k != "$ref"}
                schema = {**target, **siblings} if isinstance(target, dict) else target
                continue
            if "allOf" in schema and all(isinstance(part, dict) for part in schema["allOf"]):
                merged = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    part = self.resolve(part, side)
                    merged = {**part, **merged}
                schema = merged
                continue
            return schema
        raise ValueError("a $ref cycle without a schema in between")

    def pointer(self, ref: str, side: int) -> Any:
        if not ref.startswith("#"):
            raise ValueError(f"only local $refs are compared, not {ref!r}")
        node: Any = self.roots[side]
        for part in filter(None, ref[1:].split("/")):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    @staticmethod
    def branches(schema: Any) -> list[Any]:
        if isinstance(schema, dict):
            for keyword in ("anyOf", "oneOf"):
                if keyword in schema:
                    siblings = {k: v for k, v in schema.items() if k != keyword}
                    return [
                        {**siblings, **branch} if isinstance(branch, dict) else branch for branch in schema[keyword]
                    ]
        return [schema]

    def compare(self, old: Any, new: Any, path: str) -> list[Incompatibility]:
        old, new = self.resolve(old, 0), self.resolve(new, 1)
        key = (id(old), id(new))
        if key in self.active:  # a recursive model: assume the inner occurrence holds, as the outer one is being proven
            return []
        self.active.add(key)
        try:
            return self._compare(old, new, path)
        finally:
            self.active.discard(key)

    def _compare(self, old: Any, new: Any, path: str) -> list[Incompatibility]:
        if new is True or new == {} or old is False:
            return []
        if old is True:
            old = {}
        if new is False:
            return [Incompatibility(path, "field-refused", "the new schema refuses every value")]
        old_branches, new_branches = self.branches(old), self.branches(new)
        if len(old_branches) > 1 or len(new_branches) > 1:
            return self._compare_branches(old_branches, new_branches, path)
        found: list[Incompatibility] = []
        found += self._types(old, new, path)
        found += self._values(old, new, path)
        found += self._limits(old, new, path)
        found += self._strings(old, new, path)
        found += self._numbers(old, new, path)
        found += self._arrays(old, new, path)
        found += self._objects(old, new, path)
        for keyword in sorted(set(old) | set(new)):
            if keyword in ANNOTATIONS or keyword in COMPARED or keyword.startswith("x-"):
                continue
            if keyword in new and old.get(keyword) != new[keyword]:
                found.append(
                    Incompatibility(
                        path,
                        "unsupported-change",
                        f"keyword {keyword!r} changed from {_show(old.get(keyword))} to {_show(new[keyword])}, "
                        "which cannot be proven compatible",
                    )
                )
        return found

    def _compare_branches(self, old_branches: list, new_branches: list, path: str) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        for branch in old_branches:
            attempts = [self.compare(branch, candidate, path) for candidate in new_branches]
            if any(not attempt for attempt in attempts):
                continue
            closest = min(attempts, key=len)
            if len(new_branches) == 1 or not any(f.rule.startswith("type-") for f in closest):
                found += closest  # the alternative of the same type: say what about it is tighter
            else:
                found.append(
                    Incompatibility(
                        path,
                        "type-changed",
                        f"a value of type {_describe(self.resolve(branch, 0))} is accepted by no alternative of the "
                        f"new schema ({', '.join(_describe(self.resolve(c, 1)) for c in new_branches)})",
                    )
                )
        return found

    @staticmethod
    def _type_set(schema: dict) -> set[str] | None:
        declared = schema.get("type")
        if declared is not None:
            return {declared} if isinstance(declared, str) else set(declared)
        values = _values_of(schema)
        if values is not None:
            return {_json_type(value) for value in values}
        return None

    def _types(self, old: dict, new: dict, path: str) -> list[Incompatibility]:
        new_types = self._type_set(new)
        if new_types is None or "type" not in new:
            return []
        old_types = self._type_set(old)
        if old_types is None:
            return [
                Incompatibility(path, "type-narrowed", f"any type was accepted, now only {'/'.join(sorted(new_types))}")
            ]
        widened = new_types | ({"integer"} if "number" in new_types else set())
        lost = old_types - widened
        if lost:
            return [
                Incompatibility(
                    path,
                    "type-changed",
                    f"type changed from {'/'.join(sorted(old_types))} to {'/'.join(sorted(new_types))}",
                )
            ]
        return []

    @staticmethod
    def _values(old: dict, new: dict, path: str) -> list[Incompatibility]:
        new_values = _values_of(new)
        if new_values is None:
            return []
        old_values = _values_of(old)
        if old_values is None:
            return [
                Incompatibility(
                    path, "enum-narrowed", f"any value was accepted, now only {', '.join(map(_show, new_values))}"
                )
            ]
        kept = {_show(value) for value in new_values}
        return [
            Incompatibility(path, "enum-value-removed", f"value {_show(value)} was removed")
            for value in old_values
            if _show(value) not in kept
        ]

    @staticmethod
    def _limits(old: dict, new: dict, path: str) -> list[Incompatibility]:
        found = []
        for keyword, what in LOWER_LIMITS.items():
            if keyword in new and new[keyword] > old.get(keyword, 0):
                found.append(
                    Incompatibility(
                        path,
                        f"{keyword}-tightened",
                        f"{keyword} (minimum {what}) raised from {old.get(keyword, 'none')} to {new[keyword]}",
                    )
                )
        for keyword, what in UPPER_LIMITS.items():
            if keyword in new and (keyword not in old or new[keyword] < old[keyword]):
                found.append(
                    Incompatibility(
                        path,
                        f"{keyword}-tightened",
                        f"{keyword} (maximum {what}) lowered from {old.get(keyword, 'none')} to {new[keyword]}",
                    )
                )
        return found

    @staticmethod
    def _strings(old: dict, new: dict, path: str) -> list[Incompatibility]:
        found = []
        for keyword in ("pattern", "format"):
            if keyword in new and old.get(keyword) != new[keyword]:
                found.append(
                    Incompatibility(
                        path,
                        f"{keyword}-changed",
                        f"{keyword} changed from {_show(old.get(keyword))} to {_show(new[keyword])}",
                    )
                )
        return found

    @staticmethod
    def _numbers(old: dict, new: dict, path: str) -> list[Incompatibility]:
        found = []
        old_low, new_low = (
            _bound(old, "minimum", "exclusiveMinimum", max),
            _bound(new, "minimum", "exclusiveMinimum", max),
        )
        if new_low is not None and (
            old_low is None or new_low[0] > old_low[0] or (new_low[0] == old_low[0] and new_low[1] and not old_low[1])
        ):
            found.append(
                Incompatibility(
                    path,
                    "minimum-tightened",
                    f"lower bound raised from {_show_bound(old_low, '>')} to {_show_bound(new_low, '>')}",
                )
            )
        old_high, new_high = (
            _bound(old, "maximum", "exclusiveMaximum", min),
            _bound(new, "maximum", "exclusiveMaximum", min),
        )
        if new_high is not None and (
            old_high is None
            or new_high[0] < old_high[0]
            or (new_high[0] == old_high[0] and new_high[1] and not old_high[1])
        ):
            found.append(
                Incompatibility(
                    path,
                    "maximum-tightened",
                    f"upper bound lowered from {_show_bound(old_high, '<')} to {_show_bound(new_high, '<')}",
                )
            )
        if "multipleOf" in new and ("multipleOf" not in old or (old["multipleOf"] / new["multipleOf"]) % 1 != 0):
            found.append(
                Incompatibility(
                    path,
                    "multipleOf-tightened",
                    f"multipleOf changed from {old.get('multipleOf', 'none')} to {new['multipleOf']}",
                )
            )
        return found

    def _arrays(self, old: dict, new: dict, path: str) -> list[Incompatibility]:
        found = []
        if new.get("uniqueItems") and not old.get("uniqueItems"):
            found.append(Incompatibility(path, "uniqueItems-tightened", "items must now be unique"))
        old_prefix, new_prefix = old.get("prefixItems", []), new.get("prefixItems", [])
        for index in range(max(len(old_prefix), len(new_prefix))):
            old_item = old_prefix[index] if index < len(old_prefix) else old.get("items", True)
            new_item = new_prefix[index] if index < len(new_prefix) else new.get("items", True)
            found += self.compare(old_item, new_item, f"{path}[{index}]")
        if "items" in new or "items" in old:
            found += self.compare(old.get("items", True), new.get("items", True), f"{path}[]")
        return found

    def _objects(self, old: dict, new: dict, path: str) -> list[Incompatibility]:
        found = []
        old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        for name, schema in old_fields.items():
            if name not in new_fields:
                found.append(
                    Incompatibility(_join(path, name), "field-removed", "the field was removed; old records carry it")
                )
            else:
                found += self.compare(schema, new_fields[name], _join(path, name))
        for name in sorted(new_required - old_required):
            if name in old_fields:
                found.append(
                    Incompatibility(
                        _join(path, name),
                        "field-made-required",
                        "an optional field became required; old records may lack it",
                    )
                )
            else:
                found.append(
                    Incompatibility(
                        _join(path, name),
                        "required-field-added",
                        "a new field is required; old records lack it (add it as optional, with a default)",
                    )
                )
        old_extra, new_extra = old.get("additionalProperties", True), new.get("additionalProperties", True)
        if new_extra is False and old_extra is not False:
            found.append(
                Incompatibility(
                    path,
                    "extra-fields-refused",
                    "fields the old schema did not list were accepted, now they are refused",
                )
            )
        elif isinstance(new_extra, dict) and old_extra is not False:
            found += self.compare(old_extra, new_extra, _join(path, "*"))
        return found


def _values_of(schema: dict) -> list | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _bound(schema: dict, inclusive: str, exclusive: str, tighter) -> tuple[float, bool] | None:
    """The effective bound as (value, exclusive?), the tighter of the inclusive and exclusive keywords."""
    candidates = []
    if isinstance(schema.get(inclusive), (int, float)):
        candidates.append((schema[inclusive], False))
    if isinstance(schema.get(exclusive), (int, float)):
        candidates.append((schema[exclusive], True))
    if not candidates:
        return None
    best = tighter(value for value, _ in candidates)
    return best, any(excl for value, excl in candidates if value == best)


def _show_bound(bound: tuple[float, bool] | None, sign: str) -> str:
    if bound is None:
        return "none"
    return f"{sign}{'' if bound[1] else '='} {bound[0]}"


def _describe(schema: Any) -> str:
    if not isinstance(schema, dict):
        return _show(schema)
    if (values := _values_of(schema)) is not None:
        return " | ".join(map(_show, values))
    declared = schema.get("type", "any")
    return declared if isinstance(declared, str) else "/".join(declared)
