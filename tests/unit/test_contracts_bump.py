"""`fleet contracts bump TOPIC` scaffolds the next version of an event, on a copy of the checkout (never on the real one):
the class, its registry topic, the upcaster stub, schema revision 1 and a test that fails until the upcaster is written;
`fleet check` then fails naming the stub, and passes the contract rules once the upcaster is written."""

import ast
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.ops.bump import EVENTS, INIT, MARKER, REGISTRY_FILE, UPCASTERS_FILE, BumpFailed, BumpRefused, bump, plan_bump
from tests.support import assert_fails_in_one_line, run_fleet

REPO = Path(__file__).resolve().parents[2]
SOURCES = {path: (REPO / path).read_text() for path in (EVENTS, REGISTRY_FILE, UPCASTERS_FILE, INIT)}
RUFF = Path(sys.executable).parent / "ruff"
# What `fleet check` still names after a bump, for the migration's other steps: the consumers' handlers declared on the
# new version, `fleet docs gen`, the docs' topic lists.
LEFT_FOR_THE_MIGRATION = {"missing-subscription", "asyncapi-stale", "asyncapi-missing-topic", "readme-missing-topic",
                          "wire-format-missing-topic"}
THE_STUB = re.compile(r"@UPCASTERS\.register\(OrderPlacedV2, OrderPlacedV3, scaffolded=True\)\n(def .*\n(?:    .*\n)+)")


def _fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "contracts").rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def real_tree_before():
    """The real checkout's contracts, before any test of this module ran: they must be the same after."""
    before = _fingerprint(REPO)
    yield before
    assert _fingerprint(REPO) == before, "a bump test touched the real checkout"


@pytest.fixture
def checkout(tmp_path, real_tree_before) -> Path:
    """A copy of what a bump reads and `fleet check` checks: contracts/, asyncapi.yaml, the README and the wire format."""
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "contracts", root / "contracts", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "docs").mkdir()
    for name in ("asyncapi.yaml", "README.md", "docs/wire-format.md"):
        shutil.copyfile(REPO / name, root / name)
    return root


def fleet_in(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`fleet ARGS` run in the copy: its contracts first on the path, the fleet and services from the repository."""
    env = {"PYTHONPATH": f"{root}:{REPO}", "PATH": "/usr/bin:/bin", "FLEET_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    return run_fleet(*args, cwd=root, env=env, timeout_s=120)


def rules_of(check: subprocess.CompletedProcess) -> set[tuple[str, str]]:
    return set(re.findall(r"^(\S+)(?: field [^:]+)?: \[([a-z0-9-]+)\]", check.stderr, re.M))


def pytest_in(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)


def write_the_upcaster(root: Path, body: str = "    return OrderPlacedV3(**dict(event))\n") -> None:
    upcasters = root / UPCASTERS_FILE
    stub = THE_STUB.search(upcasters.read_text())
    assert stub, upcasters.read_text()[-1500:]
    header = stub[1].splitlines(keepends=True)
    written = f"@UPCASTERS.register(OrderPlacedV2, OrderPlacedV3)\n{header[0]}{header[1]}{body}"
    upcasters.write_text(upcasters.read_text().replace(stub[0], written))


# ---- the plan, on the real sources' text (pure) ---------------------------------------------------------------------


def test_an_unknown_topic_is_refused_naming_the_registry_s_topics():
    with pytest.raises(BumpRefused, match=r"unknown topic 'orders\.cancelled\.v1'; the registry has: .*orders\.placed\.v2"):
        plan_bump(SOURCES, "orders.cancelled.v1")


def test_a_superseded_version_is_refused_naming_the_current_one():
    with pytest.raises(BumpRefused, match=r"orders\.placed\.v1 is not the current version of orders\.placed: orders\.placed\.v2 is"):
        plan_bump(SOURCES, "orders.placed.v1")


def test_a_next_version_begun_already_is_refused():
    events = SOURCES[EVENTS] + "\n\nclass PaymentAuthorizedV2(Event):\n    \"\"\"Begun by hand.\"\"\"\n"
    with pytest.raises(BumpRefused, match="has a class PaymentAuthorizedV2 already"):
        plan_bump({**SOURCES, EVENTS: events}, "payments.authorized.v1")


def test_a_registry_without_its_marker_is_refused_rather_than_guessed_at():
    with pytest.raises(BumpRefused, match="must hold the line"):
        plan_bump({**SOURCES, REGISTRY_FILE: SOURCES[REGISTRY_FILE].replace(MARKER, "")}, "orders.placed.v2")


def test_a_source_that_does_not_parse_is_refused_and_nothing_is_planned():
    with pytest.raises(BumpRefused, match=r"contracts/upcasters\.py does not parse"):
        plan_bump({**SOURCES, UPCASTERS_FILE: SOURCES[UPCASTERS_FILE] + "\ndef broken(:\n"}, "orders.placed.v2")


def test_the_new_topic_keeps_every_setting_of_the_current_one_and_says_what_it_supersedes():
    plan = plan_bump(SOURCES, "fleet.control.v1")
    assert (plan.new_topic, plan.new_model, plan.upcaster) == ("fleet.control.v2", "ControlIssuedV2", "control_issued_v1_to_v2")
    assert plan.test_path == "tests/unit/test_upcaster_fleet_control_v1_to_v2.py"
    entry = next(node for node in ast.walk(ast.parse(plan.files[REGISTRY_FILE]))
                 if isinstance(node, ast.Call) and any(k.arg == "name" and getattr(k.value, "value", None) == "fleet.control.v2" for k in node.keywords))
    keywords = {k.arg: k.value for k in entry.keywords}
    assert keywords["model"].id == "ControlIssuedV2"
    value = {name: ast.literal_eval(node) for name, node in keywords.items() if name != "model"}
    assert (value["partitions"], value["retention_ms"], value["broadcast"], value["key_field"]) == (1, -1, True, "service")
    assert value["consumers"] == ("payments", "inventory", "shipping", "notifications", "tracker")
    assert value["description"].endswith("a replica that starts reads it first. Supersedes fleet.control.v1.")
    assert plan.files[REGISTRY_FILE].index("fleet.control.v2") < plan.files[REGISTRY_FILE].index(MARKER)


def test_the_new_class_is_the_current_one_renamed_with_its_validator_and_a_docstring_naming_its_version():
    plan = plan_bump(SOURCES, "fleet.control.v1")
    new_class = next(node for node in ast.parse(plan.files[EVENTS]).body if isinstance(node, ast.ClassDef) and node.name == "ControlIssuedV2")
    source = ast.get_source_segment(plan.files[EVENTS], new_class)
    assert "v2 of ControlIssued: written by `fleet contracts bump` as a copy of ControlIssued" in " ".join(source.split())
    assert "def _seek_has_a_group_and_offsets(self) -> ControlIssuedV2:" in source
    assert '"ControlIssuedV2",' in plan.files[EVENTS] and '"ControlIssuedV2",' in plan.files[INIT]


def test_a_topic_s_first_bump_names_the_class_v2_and_the_older_ones_stay_as_they_were():
    plan = plan_bump(SOURCES, "payments.authorized.v1")
    assert (plan.old_model, plan.new_model, plan.upcaster) == ("PaymentAuthorized", "PaymentAuthorizedV2", "payment_authorized_v1_to_v2")
    assert "class PaymentAuthorized(Event):" in plan.files[EVENTS]
    assert "@UPCASTERS.register(PaymentAuthorized, PaymentAuthorizedV2, scaffolded=True)" in plan.files[UPCASTERS_FILE]
    assert "raise NotImplementedError(" in plan.files[UPCASTERS_FILE].split("def payment_authorized_v1_to_v2")[1]


# ---- the bump, on a copy of the checkout ----------------------------------------------------------------------------


def test_a_bump_writes_the_scaffold_lint_clean_and_leaves_the_stub_failing_fleet_check_and_its_test(checkout):
    done = bump("orders.placed.v2", checkout)
    assert done.written == (EVENTS, REGISTRY_FILE, UPCASTERS_FILE, INIT, "contracts/schemas/orders.placed.v3/1.json",
                            "contracts/vectors/upcasters/orders.placed.v2-to-v3.json",
                            "tests/unit/test_upcaster_orders_placed_v2_to_v3.py")
    vectors = json.loads((checkout / "contracts/vectors/upcasters/orders.placed.v2-to-v3.json").read_text())
    assert (vectors["upcaster"], vectors["source"], vectors["target"]) == ("order_placed_v2_to_v3", "orders.placed.v2", "orders.placed.v3")
    [case] = vectors["cases"]
    assert case["input"] == case["output"] and case["input"]["channel"] == "web" and case["input"]["order_id"] == "ord-7f3a9c"
    assert '"$id": "urn:eventfleet:schema:orders.placed.v3/1"' in (checkout / "contracts/schemas/orders.placed.v3/1.json").read_text()
    for command in (["check"], ["format", "--check"]):
        linted = subprocess.run([str(RUFF), *command, "--config", str(REPO / "pyproject.toml"), "contracts", "tests"],
                                cwd=checkout, capture_output=True, text=True)
        assert linted.returncode == 0, linted.stdout + linted.stderr

    check = fleet_in(checkout, "check")
    assert check.returncode == 1
    assert ("orders.placed.v2", "upcaster-scaffolded") in rules_of(check)
    assert "the upcaster order_placed_v2_to_v3 (OrderPlacedV2 → OrderPlacedV3) is the stub" in check.stderr
    assert {rule for _, rule in rules_of(check)} - LEFT_FOR_THE_MIGRATION == {"upcaster-scaffolded"}, check.stderr

    tests = pytest_in(checkout)
    assert tests.returncode == 1 and "NotImplementedError" in tests.stdout and "1 failed, 1 passed" in tests.stdout, tests.stdout


def test_the_vectors_decide_what_the_written_upcaster_must_return(checkout):
    bump("orders.placed.v2", checkout)
    write_the_upcaster(checkout, "    return OrderPlacedV3(**{**dict(event), \"channel\": \"store\"})\n")
    wrong = pytest_in(checkout)
    assert wrong.returncode == 1 and "1 failed, 1 passed" in wrong.stdout, wrong.stdout
    path = checkout / "contracts/vectors/upcasters/orders.placed.v2-to-v3.json"
    vectors = json.loads(path.read_text())
    vectors["cases"][0]["output"]["channel"] = "store"
    path.write_text(json.dumps(vectors))
    assert pytest_in(checkout).returncode == 0


def test_once_the_upcaster_is_written_its_test_and_the_contract_rules_pass(checkout):
    bump("orders.placed.v2", checkout)
    write_the_upcaster(checkout)
    tests = pytest_in(checkout)
    assert tests.returncode == 0 and "2 passed" in tests.stdout, tests.stdout
    check = fleet_in(checkout, "check")
    assert {rule for _, rule in rules_of(check)} == LEFT_FOR_THE_MIGRATION, check.stderr
    assert "contracts (11 topics: documented fields, valid examples, current and compatible schema revisions, upcasters): ok" in check.stderr


def test_until_its_upcaster_is_written_the_new_version_s_revision_is_a_draft_that_export_rewrites(checkout):
    bump("orders.placed.v2", checkout)
    events = checkout / EVENTS
    gift = ('    gift: bool = Field(description="Whether the order is wrapped as a gift.", examples=[False])\n\n\n'
            "class PaymentAuthorized(Event):")
    events.write_text(events.read_text().replace("\n\n\nclass PaymentAuthorized(Event):", "\n" + gift, 1))
    stale = fleet_in(checkout, "check")
    assert ("orders.placed.v3", "schema-stale") in rules_of(stale), stale.stderr
    assert "the draft revision `fleet contracts bump` wrote" in stale.stderr
    assert not {rule for _, rule in rules_of(stale)} & {"required-field-added", "field-removed"}, stale.stderr

    exported = fleet_in(checkout, "contracts", "export")
    assert exported.returncode == 0, exported.stderr
    assert "wrote contracts/schemas/orders.placed.v3/1.json (the draft revision of a new version, rewritten)" in exported.stdout
    assert '"gift"' in (checkout / "contracts/schemas/orders.placed.v3/1.json").read_text()
    assert not (checkout / "contracts/schemas/orders.placed.v3/2.json").exists()

    write_the_upcaster(checkout, "    return OrderPlacedV3(**dict(event), gift=False)\n")
    assert not {rule for _, rule in rules_of(fleet_in(checkout, "check"))} & {"schema-stale", "upcaster-scaffolded"}
    # Written, the upcaster ends the draft: revision 1 is kept for good, and removing the field is a breaking change.
    events.write_text(events.read_text().replace(gift.split("\n")[0] + "\n", "", 1))
    final = fleet_in(checkout, "check")
    assert ("orders.placed.v3", "field-removed") in rules_of(final), final.stderr


def test_a_second_bump_of_the_same_version_is_refused_and_changes_nothing(checkout):
    bump("orders.placed.v2", checkout)
    before = _fingerprint(checkout)
    with pytest.raises(BumpRefused, match="orders.placed.v2 is not the current version of orders.placed: orders.placed.v3 is"):
        bump("orders.placed.v2", checkout)
    assert _fingerprint(checkout) == before


def test_a_scaffold_that_does_not_import_puts_every_file_back(checkout):
    before = _fingerprint(checkout)
    failing_python = checkout / "python"
    failing_python.write_text("#!/bin/sh\necho 'RegistryError: a broken scaffold' >&2\nexit 1\n")
    failing_python.chmod(0o755)
    with pytest.raises(BumpFailed, match="the scaffold of orders.placed.v3 does not import: RegistryError: a broken scaffold"):
        bump("orders.placed.v2", checkout, python=str(failing_python))
    assert _fingerprint(checkout) == before
    assert not (checkout / "tests").exists() and not (checkout / "contracts/vectors/upcasters/orders.placed.v2-to-v3.json").exists()


def test_the_command_prints_what_it_wrote_and_the_next_steps(checkout):
    done = fleet_in(checkout, "contracts", "bump", "orders.placed.v2")
    assert done.returncode == 0, done.stderr
    assert "wrote contracts/schemas/orders.placed.v3/1.json" in done.stdout
    assert "write order_placed_v2_to_v3 in contracts/upcasters.py, drop `scaffolded=True`" in done.stdout


@pytest.mark.parametrize(("topic", "says"), [
    ("orders.placed.v1", "orders.placed.v1 is not the current version of orders.placed: orders.placed.v2 is"),
    ("orders.cancelled.v1", "unknown topic 'orders.cancelled.v1'"),
])
def test_the_command_refuses_in_one_line_and_exits_64(checkout, topic, says):
    line = assert_fails_in_one_line(fleet_in(checkout, "contracts", "bump", topic), 64)
    assert says in line


def test_the_command_outside_a_checkout_says_where_to_run_it_and_exits_66(tmp_path):
    line = assert_fails_in_one_line(fleet_in(tmp_path, "contracts", "bump", "orders.placed.v2"), 66)
    assert "run `fleet contracts bump` from the checkout's top folder" in line
