"""`pip install .` into a fresh venv outside the checkout: the installed `fleet` has its commands and package data, and
runs payments on the test broker."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from contracts import OrderPlaced, PaymentAuthorized, PaymentDeclined
from fleet.cli.app import app
from tests.support import TopicReader, a_record, an_order, as_raw, produce_raw, start_group_at_end

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contracts", "fleet", "services")
# contracts/ is also the source of the contracts-only distribution (`pip install ./contracts`): its build file is not
# package data of either.
NOT_PACKAGE_DATA = {"contracts/pyproject.toml"}

# The install (about 20 s with PyPI reachable) runs in the first test's setup: room for a slow index, never a hang.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

# Runs on the new venv's interpreter, in a folder outside the checkout: where everything it imports comes from.
WHERE_IT_COMES_FROM = """
import json, sys
from importlib.metadata import distribution
from importlib.resources import files

import contracts, fleet, fleet.cli, services
from contracts.governance import SCHEMAS_DIR, contract_problems
from fleet.local.kafka import TEMPLATES

broker_files = files("fleet.local") / "broker_files"
print(json.dumps({
    "sys_path": sys.path,
    "modules": [module.__file__ for module in (contracts, fleet, fleet.cli, services)],
    "pom": str(broker_files / "pom.xml"),
    "pom_is_a_file": (broker_files / "pom.xml").is_file(),
    "templates": str(TEMPLATES),
    "schemas": str(SCHEMAS_DIR),
    "contract_problems": [str(problem) for problem in contract_problems()],
    "installed_files": [str(path) for path in distribution("eventfleet").files],
}))
"""


def checkout_files() -> list[str]:
    """The checkout as git sees it (tracked, and new files not ignored): no venv, caches, build output, broker data."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    return sorted({name for name in listed.split("\0") if name and (ROOT / name).is_file()})


def without_the_checkout(venv: Path, **settings: str) -> dict[str, str]:
    """The environment minus anything that leads Python back to the checkout (PYTHONPATH, its venv, a path into it),
    with the new venv first on PATH, and `settings` on top."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PYTHON") and name != "VIRTUAL_ENV" and str(ROOT) not in value
    }
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry and str(ROOT) not in entry]
    env |= {"PATH": os.pathsep.join([str(venv / "bin"), *path]), "VIRTUAL_ENV": str(venv)}
    return env | {"COLUMNS": "200"} | settings  # wide enough that help text never wraps a command's name


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv of its own, outside the checkout, with `pip install <checkout>` in it (not editable)."""
    work = tmp_path_factory.mktemp("installed-package")
    assert not work.resolve().is_relative_to(ROOT), f"{work} must be outside the checkout"
    # pip builds in the source folder (build/, *.egg-info), so it builds a copy: the checkout, which other runs and
    # engineers use meanwhile, is never written to.
    source, venv = work / "eventfleet", work / "venv"
    for name in checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], cwd=work, capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    started = time.monotonic()
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)], cwd=work,
                         env=without_the_checkout(venv), capture_output=True, text=True, timeout=480)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    print(f"pip install of the checkout took {time.monotonic() - started:.1f} s")
    return venv


@pytest.fixture(scope="module")
def found(installed, tmp_path_factory) -> dict:
    """What WHERE_IT_COMES_FROM reports from the installed interpreter, run in a folder outside the checkout."""
    run = subprocess.run([str(installed / "bin" / "python"), "-c", WHERE_IT_COMES_FROM],
                         cwd=tmp_path_factory.mktemp("elsewhere"), env=without_the_checkout(installed),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """The working directory of the installed `fleet`: a folder of its own, with nothing of the checkout in it."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    return tmp_path


def fleet(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed / "bin" / "fleet"), *args], cwd=cwd, env=without_the_checkout(installed),
                          capture_output=True, text=True, timeout=120)


def test_everything_the_installed_fleet_imports_and_reads_is_in_the_venv_not_the_checkout(installed, found):
    assert not [entry for entry in found["sys_path"] if entry and Path(entry).resolve().is_relative_to(ROOT)]
    for path in (*found["modules"], found["pom"], found["templates"], found["schemas"]):
        assert Path(path).is_relative_to(installed), f"{path} is not the installed copy"
    assert found["pom_is_a_file"]
    assert found["contract_problems"] == [], "the installed models and their shipped schema revisions agree"


def test_every_data_file_of_the_packages_is_installed(found):
    data = {
        name
        for name in checkout_files()
        if name.split("/")[0] in PACKAGES and not name.endswith(".py") and name not in NOT_PACKAGE_DATA
    }
    assert {"contracts/vectors/signing-v1.json", "fleet/local/broker_files/pom.xml"} <= data
    assert data - set(found["installed_files"]) == set(), "declare them in [tool.setuptools.package-data]"


def test_fleet_help_lists_every_command(installed, elsewhere):
    result = fleet(installed, elsewhere, "--help")
    assert result.returncode == 0, result.stderr
    commands = sorted(typer.main.get_command(app).commands)  # the checkout's command line, to compare with
    assert "run" in commands and "kafka" in commands
    missing = [name for name in commands if not re.search(rf"^\W*{re.escape(name)}\s", result.stdout, re.MULTILINE)]
    assert missing == [], result.stdout


def test_fleet_kafka_start_has_its_help(installed, elsewhere):
    result = fleet(installed, elsewhere, "kafka", "start", "--help")
    assert result.returncode == 0 and "Usage" in result.stdout, result.stderr


def test_fleet_contracts_export_writes_nothing_outside_a_checkout(installed, elsewhere):
    result = fleet(installed, elsewhere, "contracts", "export")
    # 66 (EX_NOINPUT): the documented code of a command that finds nothing to work on (README, "Exit codes").
    assert result.returncode == 66 and "from the checkout's top folder" in result.stderr
    assert list(elsewhere.iterdir()) == []


async def test_the_installed_fleet_runs_payments_on_the_test_broker_and_stops_on_sigterm(
    installed, elsewhere, kafka, group_id
):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    env = without_the_checkout(
        installed,
        FLEET_KAFKA_BOOTSTRAP_SERVERS=kafka,
        FLEET_KEYS_DIR=os.environ["FLEET_KEYS_DIR"],
        FLEET_LOG_FORMAT="json",
        PAYMENTS_STORE_URL=f"sqlite:///{elsewhere / 'payments.db'}",
        PAYMENTS_HTTP_PORT="0",
        PAYMENTS_GROUP_ID=group_id,
    )
    log_path = elsewhere / "payments.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(installed / "bin" / "fleet"), "run", "payments"], cwd=elsewhere, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        order = a_record(an_order(), correlation_id=f"flow-{group_id}")
        async with TopicReader(kafka, [PaymentAuthorized, PaymentDeclined]) as reader:
            await produce_raw(kafka, [as_raw(order)])
            [outcome] = await reader.wait_for_keys([order.key], timeout_s=90)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
    assert outcome.headers["ce_causationid"] == order.envelope.id
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("event_id") == order.envelope.id]
    assert [line["service"] for line in mine if line.get("event") == "event_handled"] == ["payments"]
    assert (elsewhere / "payments.db").is_file(), "the store is where PAYMENTS_STORE_URL says"
