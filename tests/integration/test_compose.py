"""docker-compose.yml: valid under the compose-spec schema, and `docker compose up --scale payments=3` works by design."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from fleet.catalog import HTTP_SERVICES, WORKERS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / ".cache" / "k8s-schemas" / "compose-spec" / "compose-spec.json"
KEYS_DIR = "/etc/eventfleet/keys"


def compose_errors(document: dict) -> list[str]:
    if not SCHEMA.exists():  # fail, never skip
        pytest.fail(f"{SCHEMA.relative_to(ROOT)} is missing: run `make k8s-schemas` (or `make test`, which runs it)", pytrace=False)
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def host_ports(service: dict) -> list[str]:
    """The host side of each published port ("127.0.0.1:8080:8080" -> "127.0.0.1:8080"; none for a random one)."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if port.get("published"):
                found.append(f"{port.get('host_ip', '0.0.0.0')}:{port['published']}")
            continue
        parts = str(port).split(":")
        if len(parts) == 3 and parts[1]:
            found.append(f"{parts[0]}:{parts[1]}")
        elif len(parts) == 2:
            found.append(f"0.0.0.0:{parts[0]}")
    return found


def scaling_problems(document: dict) -> list[str]:
    services = document["services"]
    problems = []
    for name, service in services.items():
        if "container_name" in service:
            problems.append(f"{name}: container_name stops `--scale`")
    published = [port for service in services.values() for port in host_ports(service)]
    if len(published) != len(set(published)):
        problems.append(f"two services publish the same host port: {published}")
    for name in WORKERS:
        service = services.get(name)
        if service is None:
            problems.append(f"{name}: missing")
            continue
        if host_ports(service):
            problems.append(f"{name}: a worker publishes a host port, so a second replica would clash")
        if service.get("command") != [name] or service.get("build") != ".":
            problems.append(f"{name}: must be built from the Dockerfile and run `fleet run {name}`")
        if not any(str(v).startswith("keys:") and KEYS_DIR in str(v) for v in service.get("volumes", [])):
            problems.append(f"{name}: the keys volume is not mounted at {KEYS_DIR}")
        if service.get("depends_on", {}).get("init", {}).get("condition") != "service_completed_successfully":
            problems.append(f"{name}: must wait for `init` to complete")
        env = service.get("environment", {})
        if env.get(f"{name.upper()}_HTTP_HOST") != "0.0.0.0":
            problems.append(f"{name}: {name.upper()}_HTTP_HOST must be 0.0.0.0")
        store = str(env.get(f"{name.upper()}_STORE_URL", ""))
        shared = [v for v in service.get("volumes", []) if not str(v).startswith("keys:")
                  and any(v in other.get("volumes", []) for o, other in services.items() if o not in (name, "gateway"))]
        if shared:
            problems.append(f"{name}: shares a volume with another service: {shared}")
        if name == "payments" and not store.startswith("postgresql://"):
            problems.append("payments: several replicas need its store on PostgreSQL")
    payments = services.get("payments", {})
    if "postgres" not in payments.get("depends_on", {}):
        problems.append("payments: must wait for postgres")
    for name in HTTP_SERVICES:
        if name not in services:
            problems.append(f"{name}: missing")
    init = services.get("init", {})
    command = " ".join(init.get("entrypoint", []) + init.get("command", []))
    if "fleet keys init" not in command or "fleet topics apply" not in command:
        problems.append("init: must run `fleet keys init` and `fleet topics apply`")
    if not re.match(r"apache/kafka:", services.get("kafka", {}).get("image", "")):
        problems.append("kafka: the official apache/kafka image")
    return problems


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_is_valid_under_the_compose_spec(compose):
    assert compose_errors(compose) == []


def test_services_scale_by_design(compose):
    assert scaling_problems(compose) == []


def test_dockerfile_builds_one_image_for_every_service():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert "pip install ." in dockerfile
    assert 'ENTRYPOINT ["fleet", "run"]' in dockerfile


def test_a_broken_compose_file_fails(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["payments"]["container_name"] = "payments"
    broken["services"]["payments"]["ports"] = ["127.0.0.1:8101:8101"]
    broken["services"]["payments"]["environment"]["PAYMENTS_STORE_URL"] = "sqlite:////var/lib/eventfleet/payments.db"
    problems = scaling_problems(broken)
    assert any("container_name" in p for p in problems)
    assert any("publishes a host port" in p for p in problems)
    assert any("PostgreSQL" in p for p in problems)
    broken["services"]["payments"]["restart"] = ["always"]  # not a string
    broken["services"]["payments"]["stop_grace_periodd"] = "45s"
    assert len(compose_errors(broken)) >= 2
