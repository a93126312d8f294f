"""`fleet contracts bump TOPIC`: scaffolds the next version of an event in the contracts' source.

It writes a class `<Name>V<N+1>` (a copy of the current class), its registry topic `<family>.v<N+1>`, the upcaster from
version N as a stub registered with `scaffolded=True`, revision 1 of the new topic's JSON Schema, the upcaster's
vectors (contracts/vectors/upcasters/, one case) and its test, which fails until the upcaster is written; so does `fleet
check`.

`plan_bump` is pure: the text of the contracts' modules in, their new text out, each new text parsed before it is
given (a scaffold that would not parse is refused, never written). `bump` reads and writes the files of a checkout,
exports the schema and builds the vectors' case in a Python process of its own on that checkout (the new modules are
imported there, never in the caller), and puts every file back as it was when any step fails."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "EVENTS",
    "INIT",
    "MARKER",
    "REGISTRY_FILE",
    "UPCASTERS_FILE",
    "BumpFailed",
    "BumpPlan",
    "BumpRefused",
    "Bumped",
    "bump",
    "plan_bump",
    "upcaster_test_path",
    "upcaster_test_text",
    "upcaster_vectors",
]

EVENTS = "contracts/events.py"
REGISTRY_FILE = "contracts/registry.py"
UPCASTERS_FILE = "contracts/upcasters.py"
INIT = "contracts/__init__.py"
SOURCES = (EVENTS, REGISTRY_FILE, UPCASTERS_FILE, INIT)
MARKER = "# `fleet contracts bump` adds a topic's next version here."
WIDTH = 120  # the project's line length (ruff)
TOPIC_NAME = re.compile(r"^(?P<family>[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)$")
SUPERSEDES = re.compile(r"\s*Supersedes [a-z0-9_.]+\.$")
VERSION_NOTE = re.compile(r"\s*\(v[0-9]+ of [^)]*\)")


class BumpRefused(ValueError):
    """The topic cannot be bumped (unknown, not the current version, its next version exists already, or the source is
    not as the scaffolder expects); nothing was written."""


class BumpFailed(RuntimeError):
    """The scaffold was written but did not import or export; every file was put back as it was."""


@dataclass(frozen=True)
class BumpPlan:
    """What a bump writes: the names it gives, and the new text of each contracts module it edits."""

    old_topic: str
    new_topic: str
    old_model: str
    new_model: str
    upcaster: str
    test_path: str  # relative to the checkout
    vectors_path: str  # relative to the checkout
    files: dict[str, str]  # relative path → new text


@dataclass(frozen=True)
class Bumped:
    """What `bump` wrote, relative to the checkout, in the order it wrote them."""

    plan: BumpPlan
    written: tuple[str, ...]


# ---- pure: names ---------------------------------------------------------------------------------------------------


def _base_name(model: str) -> str:
    """`OrderPlacedV2` → `OrderPlaced`: the class name without its version."""
    return re.sub(r"V[0-9]+$", "", model)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def upcaster_test_path(family: str, version: int) -> str:
    """Where the test of the upcaster from `version` to the next goes: tests/unit/test_upcaster_<family>_v1_to_v2.py."""
    return f"tests/unit/test_upcaster_{family.replace('.', '_')}_v{version}_to_v{version + 1}.py"


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"([0-9]+)", name)]


def _isort_key(name: str) -> tuple[int, list[Any]]:
    """How ruff orders imported names and `__all__`: CONSTANTS, then Classes, then the rest, each naturally."""
    bare = name.split(" as ")[0]
    kind = 0 if bare.isupper() and len(bare) > 1 else 1 if bare[:1].isupper() else 2
    return kind, _natural(bare)


# ---- pure: source text ---------------------------------------------------------------------------------------------


def _parse(path: str, text: str) -> ast.Module:
    try:
        return ast.parse(text, filename=path)
    except SyntaxError as error:
        raise BumpRefused(f"{path} does not parse ({error.msg}, line {error.lineno}); nothing written") from None


def _module_level(tree: ast.Module, kind: type, name: str) -> Any:
    for node in tree.body:
        if isinstance(node, kind) and getattr(node, "name", None) == name:
            return node
    return None


def _assigned_list(tree: ast.Module, target: str) -> ast.List | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == target for t in node.targets):
            return node.value if isinstance(node.value, ast.List) else None
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == target:
            return node.value if isinstance(node.value, ast.List) else None
    return None


def _replace_lines(text: str, first: int, last: int, new: list[str]) -> str:
    """`text` with its lines first..last (1-based, inclusive) replaced by `new`."""
    lines = text.splitlines()
    return "\n".join([*lines[: first - 1], *new, *lines[last:]]) + "\n"


def _string_lines(prefix: str, text: str, suffix: str, indent: str) -> list[str]:
    """A string as implicitly concatenated literals of at most WIDTH characters: `prefix"..."`, then `indent"..."`
    lines, the last followed by `suffix`."""

    def quoted(chunk: str) -> str:
        return json.dumps(chunk, ensure_ascii=False)  # a JSON string is a Python literal (no `\\/` is ever written)

    words = text.split(" ")
    lines: list[str] = []
    head = prefix
    chunk = ""
    for index, word in enumerate(words):
        piece = word + (" " if index < len(words) - 1 else "")
        reserve = len(suffix) if index == len(words) - 1 else 0
        if chunk and len(head) + len(quoted(chunk + piece)) + reserve > WIDTH:
            lines.append(head + quoted(chunk))
            head, chunk = indent, ""
        chunk += piece
    lines.append(head + quoted(chunk) + suffix)
    return lines


def _with_name_in_all(path: str, text: str, name: str) -> str:
    """`__all__` with `name` added where ruff's order (RUF022) puts it, one entry a line."""
    tree = _parse(path, text)
    listed = _assigned_list(tree, "__all__")
    if listed is None or not listed.elts or listed.end_lineno == listed.lineno:
        raise BumpRefused(f"{path} has no `__all__ = [...]` list of one name a line; nothing written")
    names = [e.value for e in listed.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    if name in names:
        return text
    after = [e for e in listed.elts if _isort_key(e.value) > _isort_key(name)]  # type: ignore[attr-defined]
    line = after[0].lineno if after else listed.elts[-1].end_lineno + 1  # type: ignore[operator]
    indent = " " * listed.elts[0].col_offset
    lines = text.splitlines()
    lines.insert(line - 1, f'{indent}"{name}",')
    return "\n".join(lines) + "\n"


def _with_names_imported(path: str, text: str, module: str, names: list[str]) -> str:
    """The module's `from .<module> import ...` with `names` among its names, written as ruff writes it."""
    tree = _parse(path, text)
    node = next(
        (n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == module and n.level == 1),
        None,
    )
    if node is None:
        raise BumpRefused(f"{path} has no `from .{module} import ...`; nothing written")
    segment = "\n".join(text.splitlines()[node.lineno - 1 : node.end_lineno])
    if "#" in segment:
        raise BumpRefused(f"{path}: `from .{module} import ...` has a comment inside; nothing written")
    present = [a.name if a.asname is None else f"{a.name} as {a.asname}" for a in node.names]
    wanted = sorted(
        dict.fromkeys([*present, *(n for n in names if n not in {a.name for a in node.names})]), key=_isort_key
    )
    one_line = f"from .{module} import {', '.join(wanted)}"
    new = [one_line] if len(one_line) <= WIDTH else [f"from .{module} import (", *(f"    {n}," for n in wanted), ")"]
    return _replace_lines(text, node.lineno, node.end_lineno or node.lineno, new)


@dataclass(frozen=True)
class _TopicCall:
    name: str
    model: str
    call: ast.Call


def _registry_topics(path: str, text: str, tree: ast.Module) -> list[_TopicCall]:
    listed = _assigned_list(tree, "TOPICS")
    if listed is None:
        raise BumpRefused(f"{path} has no `TOPICS = [...]`; nothing written")
    found = []
    for element in listed.elts:
        if not (isinstance(element, ast.Call) and isinstance(element.func, ast.Name) and element.func.id == "Topic"):
            continue
        keywords = {k.arg: k.value for k in element.keywords if k.arg}
        name, model = keywords.get("name"), keywords.get("model")
        if isinstance(name, ast.Constant) and isinstance(name.value, str) and isinstance(model, ast.Name):
            found.append(_TopicCall(name.value, model.id, element))
        elif element.args:
            found.append(_TopicCall("", "", element))  # positional: known only to be a topic; refused if bumped
    return found


def _new_topic_lines(source: str, old: _TopicCall, new_topic: str, new_model: str, indent: str) -> list[str]:
    """The registry entry of the new version: the old one's settings, its own name, model and description."""
    inner = indent + "    "
    lines = [f"{indent}Topic("]
    for keyword in old.call.keywords:
        if keyword.arg == "name":
            lines.append(f'{inner}name="{new_topic}",')
        elif keyword.arg == "model":
            lines.append(f"{inner}model={new_model},")
        elif keyword.arg == "description":
            try:
                described = ast.literal_eval(keyword.value)
            except ValueError:
                raise BumpRefused(f"{old.name}'s description in {REGISTRY_FILE} is not a plain string") from None
            text = SUPERSEDES.sub("", str(described).strip()).rstrip(".") + f". Supersedes {old.name}."
            lines += _string_lines(f"{inner}description=", text, ",", inner)
        elif keyword.arg is not None:
            value = ast.get_source_segment(source, keyword.value)
            if value is None:
                raise BumpRefused(f"{old.name}'s `{keyword.arg}` in {REGISTRY_FILE} could not be read")
            lines += f"{inner}{keyword.arg}={value},".splitlines()
    lines.append(f"{indent}),")
    return lines


def _new_class_lines(source: str, node: ast.ClassDef, old: str, new: str, version: int) -> list[str]:
    """The old class, renamed, with a docstring that says which version it is."""
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    lines = source.splitlines()[first - 1 : node.end_lineno]
    body = node.body[0]
    paragraph = ""
    if isinstance(body, ast.Expr) and isinstance(body.value, ast.Constant) and isinstance(body.value.value, str):
        paragraph = " ".join(body.value.value.strip().split("\n\n")[0].split())
        lines = [*lines[: body.lineno - first], "<docstring>", *lines[(body.end_lineno or body.lineno) - first + 1 :]]
    else:
        lines.insert(node.body[0].lineno - first, "<docstring>")
    base = _base_name(old)
    summary = VERSION_NOTE.sub("", paragraph).rstrip(".") or f"{base}, version {version}"
    doc = (
        f"{summary} (v{version} of {base}: written by `fleet contracts bump` as a copy of {old}; "
        "say here what it changes)."
    )
    indent = " " * body.col_offset if isinstance(body, ast.Expr) else "    "
    docstring = textwrap.wrap(f'"""{doc}"""', width=WIDTH - len(indent), break_long_words=False)
    renamed = [re.sub(rf"\b{re.escape(old)}\b", new, line) for line in lines]
    at = renamed.index("<docstring>")
    return renamed[:at] + [indent + line for line in docstring] + renamed[at + 1 :]


def _stub_lines(old_topic: str, new_topic: str, old: str, new: str, upcaster: str) -> list[str]:
    version = new_topic.rsplit(".v", 1)[1]
    doc = f"{old_topic} → v{version}: the stub `fleet contracts bump` wrote; say here what it does to each field."
    hint = (
        f"{upcaster} is the stub `fleet contracts bump` wrote: return the {new} an {old} becomes (for example "
        f"{new}(**dict(event)), with a documented default for each field {new} adds), then drop scaffolded=True"
    )
    return [
        "",
        "",
        f"@UPCASTERS.register({old}, {new}, scaffolded=True)",
        f"def {upcaster}(event: {old}) -> {new}:",
        *("    " + line for line in textwrap.wrap(f'"""{doc}"""', width=WIDTH - 4, break_long_words=False)),
        "    raise NotImplementedError(",
        *_string_lines("        ", hint, "", "        "),
        "    )",
    ]


def plan_bump(sources: Mapping[str, str], topic: str) -> BumpPlan:
    """Pure: the new text of contracts/events.py, registry.py, upcasters.py and __init__.py (`sources`, by those
    paths) with the next version of `topic` scaffolded. Raises BumpRefused, naming why, when `topic` is unknown, is not
    the current version of its event, or its next version (topic, class or upcaster) exists already."""
    registry_text, events_text, upcasters_text = sources[REGISTRY_FILE], sources[EVENTS], sources[UPCASTERS_FILE]
    registry_tree = _parse(REGISTRY_FILE, registry_text)
    topics = _registry_topics(REGISTRY_FILE, registry_text, registry_tree)
    by_name = {t.name: t for t in topics if t.name}
    if topic not in by_name:
        raise BumpRefused(f"unknown topic {topic!r}; the registry has: {', '.join(sorted(by_name))}")
    named = TOPIC_NAME.match(topic)
    if named is None:
        raise BumpRefused(f"topic {topic!r} is not named <domain>.<event>.v<N>")
    family, version = named["family"], int(named["version"])
    versions = sorted(int(m["version"]) for t in by_name if (m := TOPIC_NAME.match(t)) and m["family"] == family)
    new_topic = f"{family}.v{version + 1}"
    if version != versions[-1]:
        raise BumpRefused(
            f"{topic} is not the current version of {family}: {family}.v{versions[-1]} is (bump that one)"
            if new_topic in by_name
            else f"{topic} is not the current version of {family}"
        )
    old = by_name[topic]
    old_model, base = old.model, _base_name(old.model)
    new_model = f"{base}V{version + 1}"
    upcaster = f"{_snake(base)}_v{version}_to_v{version + 1}"
    events_tree = _parse(EVENTS, events_text)
    old_class = _module_level(events_tree, ast.ClassDef, old_model)
    if old_class is None:
        raise BumpRefused(f"{EVENTS} has no class {old_model} (the model of {topic}) at its top level")
    if _module_level(events_tree, ast.ClassDef, new_model) is not None:
        raise BumpRefused(f"{EVENTS} has a class {new_model} already: the next version of {topic} exists")
    if _module_level(_parse(UPCASTERS_FILE, upcasters_text), ast.FunctionDef, upcaster) is not None:
        raise BumpRefused(f"{UPCASTERS_FILE} has an upcaster {upcaster} already")
    marker = [i for i, line in enumerate(registry_text.splitlines(), 1) if line.strip() == MARKER]
    if len(marker) != 1:
        raise BumpRefused(f"{REGISTRY_FILE} must hold the line `{MARKER}` once, inside TOPICS; nothing written")
    indent = registry_text.splitlines()[marker[0] - 1][: -len(MARKER)]

    events = _replace_lines(
        events_text,
        old_class.end_lineno,
        old_class.end_lineno,
        [
            events_text.splitlines()[old_class.end_lineno - 1],
            "",
            "",
            *_new_class_lines(events_text, old_class, old_model, new_model, version + 1),
        ],
    )
    events = _with_name_in_all(EVENTS, events, new_model)

    registry = _replace_lines(
        registry_text,
        marker[0],
        marker[0],
        [*_new_topic_lines(registry_text, old, new_topic, new_model, indent), indent + MARKER],
    )
    registry = _with_names_imported(REGISTRY_FILE, registry, "events", [new_model])

    upcasters = (
        upcasters_text.rstrip("\n") + "\n" + "\n".join(_stub_lines(topic, new_topic, old_model, new_model, upcaster))
    )
    upcasters = _with_names_imported(UPCASTERS_FILE, upcasters + "\n", "events", [old_model, new_model])
    upcasters = _with_name_in_all(UPCASTERS_FILE, upcasters, upcaster)

    files = {EVENTS: events, REGISTRY_FILE: registry, UPCASTERS_FILE: upcasters}
    if INIT in sources:
        init = _with_names_imported(INIT, sources[INIT], "events", [new_model])
        files[INIT] = _with_name_in_all(INIT, init, new_model)
    for path, text in files.items():
        _parse(path, text)  # a scaffold that would not parse is refused: nothing is written
    if _module_level(_parse(EVENTS, events), ast.ClassDef, new_model) is None:
        raise BumpRefused(f"the scaffold of {new_model} went wrong; nothing written")
    vectors = f"contracts/vectors/upcasters/{topic}-to-v{version + 1}.json"
    return BumpPlan(
        topic, new_topic, old_model, new_model, upcaster, upcaster_test_path(family, version), vectors, files
    )


def upcaster_vectors(plan: BumpPlan, example: dict) -> dict:
    """The new upcaster's vectors (contracts/vectors/upcasters/), with one case: `example`, a valid event of the old
    version, and as its output the same data, since the new class is a copy of the old one until it is changed."""
    old, new = plan.old_topic.rsplit(".", 1)[1], plan.new_topic.rsplit(".", 1)[1]
    return {
        "description": f"Test vectors of the upcaster from {plan.old_topic} to {plan.new_topic} (contracts.upcasters."
        f"{plan.upcaster}). Each case: `input` is the data of a {old} event as JSON (a record's value is this object), "
        f"`output` the {new} event it must become, as JSON (pydantic's JSON form). Written by `fleet contracts bump` "
        f"with one case, the fields' first examples, whose output is its input while {plan.new_model} is a copy of "
        f"{plan.old_model}: make each output what the upcaster must make of its input (a field {new} adds: its "
        "documented default), and add a case for every rule the upcaster follows.",
        "upcaster": plan.upcaster,
        "source": plan.old_topic,
        "target": plan.new_topic,
        "cases": [{"name": "the fields' first examples", "input": example, "output": example}],
    }


def upcaster_test_text(plan: BumpPlan) -> str:
    """The test of the new upcaster on its vectors: it fails until the upcaster makes each case's output of its
    input."""
    new_version = plan.new_topic.rsplit(".", 1)[1]
    models = ", ".join(sorted([plan.old_model, plan.new_model], key=_isort_key))
    title = f"The upcaster {plan.upcaster} against its vectors, written by `fleet contracts bump`."
    about = textwrap.fill(title, WIDTH) + "\n\n"
    about += textwrap.fill(
        f"It upcasts {plan.old_topic} to {plan.new_topic}. The test fails until the upcaster is written and each "
        f"case's output in {plan.vectors_path} is what it must make of its input." + '"""',
        WIDTH,
    )
    where = f'VECTORS_FILE = Path(__file__).resolve().parents[2] / "{plan.vectors_path}"'
    if len(where) > WIDTH:  # as ruff formats it
        where = f'VECTORS_FILE = (\n    Path(__file__).resolve().parents[2] / "{plan.vectors_path}"\n)'
    return f'''"""{about}

import json
from pathlib import Path

import pytest

from contracts.events import {models}
from contracts.upcasters import UPCASTERS, {plan.upcaster}

{where}
VECTORS = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[case["name"] for case in VECTORS["cases"]])
def test_{plan.upcaster}_makes_each_vector_s_output_of_its_input(case):
    source = {plan.old_model}.model_validate_json(json.dumps(case["input"]))  # as a record's value is read
    upcast = {plan.upcaster}(source)
    assert isinstance(upcast, {plan.new_model})
    assert upcast.model_dump(mode="json") == case["output"]


def test_{plan.upcaster}_is_the_registered_step_to_{new_version}_and_its_vectors_name_it():
    step = UPCASTERS.of({plan.old_model})
    assert step is not None and step.function is {plan.upcaster} and step.target is {plan.new_model}
    assert VECTORS["upcaster"] == "{plan.upcaster}"
    assert VECTORS["source"] == "{plan.old_topic}"
    assert VECTORS["target"] == "{plan.new_topic}"
'''


# ---- I/O -----------------------------------------------------------------------------------------------------------

# Run on the checkout, in a process of its own: imports the scaffold (the registry checks itself, the stub registers),
# writes the new topic's revision 1, and prints the vector of the test: an event of the old version made of its fields'
# first examples.
_EXPORT = """
import json, sys
from pathlib import Path
from contracts.governance import export_schemas
from contracts.registry import REGISTRY, Registry
from contracts.upcasters import UPCASTERS

new, old = REGISTRY.named(sys.argv[1]), REGISTRY.named(sys.argv[2])
step = UPCASTERS.of(old.model)
assert step is not None and step.target is new.model and step.scaffolded, "the stub is not registered"
written, problems = export_schemas(Registry([new]), Path("contracts") / "schemas")
example = {name: field.examples[0] for name, field in old.model.model_fields.items() if field.examples}
print(json.dumps({
    "written": [str(w.path) for w in written],
    "problems": [str(p) for p in problems],
    "example": old.model.model_validate(example).model_dump(mode="json"),
}))
"""


def _run_scaffold(root: Path, plan: BumpPlan, python: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [python, "-c", _EXPORT, plan.new_topic, plan.old_topic],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or [f"exit {done.returncode}"]
        raise BumpFailed(f"the scaffold of {plan.new_topic} does not import: {last[0].strip()}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["problems"]:
        raise BumpFailed(f"the schema of {plan.new_topic} was not exported: {result['problems'][0].splitlines()[0]}")
    return dict(result)


def bump(topic: str, root: Path = Path("."), *, python: str = sys.executable) -> Bumped:
    """Scaffolds the next version of `topic` in the checkout at `root` (see the module's docstring). Raises BumpRefused
    before anything is written, BumpFailed (every file back as it was) when the scaffold does not import or export."""
    root = Path(root)
    missing = [path for path in SOURCES[:3] if not (root / path).is_file()]
    if missing:
        raise BumpRefused(
            f"no {', '.join(missing)} under {root.resolve()}: run `fleet contracts bump` from the checkout"
        )
    before = {path: (root / path).read_text(encoding="utf-8") for path in SOURCES if (root / path).is_file()}
    plan = plan_bump(before, topic)
    schema_dir = root / "contracts" / "schemas" / plan.new_topic
    vectors, test = root / plan.vectors_path, root / plan.test_path
    for begun in (schema_dir, vectors, test):
        if begun.exists():
            raise BumpRefused(f"{begun.relative_to(root)} exists already: the next version of {topic} was begun")
    created: list[Path] = []
    try:
        for name, text in plan.files.items():
            (root / name).write_text(text, encoding="utf-8")
        result = _run_scaffold(root, plan, python)
        for path, text in (
            (vectors, json.dumps(upcaster_vectors(plan, result["example"]), indent=2, ensure_ascii=False) + "\n"),
            (test, upcaster_test_text(plan)),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("x", encoding="utf-8") as file:  # "x": never over a file written since the check above
                created.append(path)
                file.write(text)
    except BaseException:
        for name, text in before.items():
            (root / name).write_text(text, encoding="utf-8")
        for leftover in [*created, *(sorted(schema_dir.glob("*.json")) if schema_dir.is_dir() else [])]:
            leftover.unlink(missing_ok=True)
        if schema_dir.is_dir() and not any(schema_dir.iterdir()):
            schema_dir.rmdir()
        raise
    written = [*plan.files, *(str(Path(p)) for p in result["written"]), plan.vectors_path, plan.test_path]
    return Bumped(plan, tuple(written))
