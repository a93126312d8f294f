"""The official AsyncAPI parser accepts asyncapi.yaml and every per-service document: no errors, no warnings.

Rule set: `@asyncapi/parser`'s default (Spectral-based "asyncapi" rules: core, recommended, the v2 rules, which are inactive on
a 3.0 document, and the v3 core rules), run by `docs/tools/validate.mjs` with the machine's `node`. Diagnostics of severity
information or hint are reported but not judged (the parser suggests AsyncAPI 3.1.0; the fleet's document is 3.0.0 on purpose).
Needs no broker, but needs Node and `make docs-tools`: without them these tests fail, they never skip.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fleet.docs.asyncapi import DOCUMENT, document_services, render, service_document

REPO = DOCUMENT.parent
TOOLS = REPO / "docs" / "tools"
VALIDATE = TOOLS / "validate.mjs"
RULESET = "the default ruleset of @asyncapi/parser (Spectral 'asyncapi': core, recommended, v2 core/schemas/recommended, v3 core)"
# Warnings we accept, by rule code, each with its reason. Empty: the documents pass without a single warning.
ALLOWED_WARNINGS: dict[str, str] = {}


def _tools() -> tuple[str, Path]:
    node = shutil.which("node")
    assert node, "`node` is not on PATH: install Node.js (>= 18), then run `make docs-tools`"
    parser = TOOLS / "node_modules" / "@asyncapi" / "parser" / "package.json"
    assert parser.exists(), f"{parser.parent} is missing: run `make docs-tools` (npm ci in docs/tools)"
    assert VALIDATE.exists(), f"{VALIDATE} is missing"
    return node, VALIDATE


def validate(*files: Path) -> tuple[int, dict]:
    """Runs docs/tools/validate.mjs on the files; returns its exit code and its JSON report."""
    node, script = _tools()
    done = subprocess.run([node, str(script), *map(str, files)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip(), f"validate.mjs printed nothing (exit {done.returncode}): {done.stderr}"
    return done.returncode, json.loads(done.stdout)


def _judge(report: dict) -> list[str]:
    problems = []
    for entry in report["documents"]:
        for diagnostic in entry["diagnostics"]:
            severity = diagnostic["severity"]
            if severity == "error" or (severity == "warning" and diagnostic["code"] not in ALLOWED_WARNINGS):
                problems.append(f"{entry['file']}:{diagnostic['line']} {severity} {diagnostic['code']}: {diagnostic['message']} "
                                f"at {'/'.join(diagnostic['path'])}")
    return problems


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[int, dict, list[Path]]:
    """One run of the parser over the committed document and every per-service document (Node starts once)."""
    folder = tmp_path_factory.mktemp("asyncapi")
    files = [DOCUMENT]
    for service in document_services():
        files.append(folder / f"{service}.yaml")
        files[-1].write_text(render(service_document(service)))
    code, report = validate(*files)
    assert report["ruleset"].startswith("asyncapi (default of @asyncapi/parser"), report["ruleset"]
    assert [entry["file"] for entry in report["documents"]] == [str(path) for path in files]
    return code, report, files


def test_the_tools_are_installed():
    node, _ = _tools()
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 18, f"node {version} is too old for @asyncapi/parser: install Node >= 18"


def test_the_committed_document_has_no_errors_and_no_warnings(clean):
    _, report, _ = clean
    problems = _judge({"documents": report["documents"][:1]})
    assert not problems, f"{RULESET} reports on asyncapi.yaml:\n" + "\n".join(problems)


def test_every_service_document_has_no_errors_and_no_warnings(clean):
    code, report, files = clean
    assert len(files) == 1 + len(document_services())
    problems = _judge({"documents": report["documents"][1:]})
    assert not problems, f"{RULESET} reports on the per-service documents:\n" + "\n".join(problems)
    assert code == 0, "validate.mjs exits 0 when no document has an error"


def _break_unresolved_ref(document: dict) -> None:
    del document["components"]["schemas"]["OrderPlaced"]


def _break_operation_message(document: dict) -> None:
    operation = document["operations"]["payments_receives_orders_placed_v1"]
    operation["messages"] = [{"$ref": "#/channels/payments_authorized_v1/messages/PaymentAuthorized"}]


def _break_relative_external_docs(document: dict) -> None:
    document["info"]["externalDocs"]["url"] = "docs/wire-format.md"


def _break_binding(document: dict) -> None:
    document["channels"]["orders_placed_v1"]["bindings"]["kafka"]["partitions"] = 0


BREAKAGES = {
    "unresolved_ref": (_break_unresolved_ref, "invalid-ref"),
    "operation_message": (_break_operation_message, "asyncapi3-operation-messages-from-referred-channel"),
    "relative_external_docs": (_break_relative_external_docs, "asyncapi-document-resolved"),
    "binding": (_break_binding, "asyncapi-document-resolved"),
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> tuple[int, dict[str, dict]]:
    """The payments document broken in several ways, each in a file of its own, parsed in one run."""
    folder = tmp_path_factory.mktemp("broken")
    files = []
    for name, (breakage, _) in BREAKAGES.items():
        document = copy.deepcopy(service_document("payments"))
        breakage(document)
        files.append(folder / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(document, sort_keys=True))
    code, report = validate(*files)
    return code, {Path(entry["file"]).stem: entry for entry in report["documents"]}


@pytest.mark.parametrize("name", BREAKAGES)
def test_a_broken_document_fails_with_the_error(broken, name):
    code, entries = broken
    errors = [d for d in entries[name]["diagnostics"] if d["severity"] == "error"]
    assert BREAKAGES[name][1] in {d["code"] for d in errors}, f"{RULESET} should report {BREAKAGES[name][1]}; got {errors}"
    assert _judge({"documents": [entries[name]]}), "the test's judge sees the error too"
    assert code == 1, "validate.mjs exits 1 when a document has an error"


def test_a_file_that_is_not_asyncapi_fails(tmp_path):
    path = tmp_path / "nothing.yaml"
    path.write_text("hello: world\n")
    code, report = validate(path)
    assert code == 1 and report["documents"][0]["errors"] >= 1
