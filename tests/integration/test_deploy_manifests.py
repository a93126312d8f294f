"""The Kubernetes manifests (deploy/k8s): both overlays valid under kubeconform, and every worker wired as docs/operations.md says."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from contracts.registry import REGISTRY
from fleet.runtime.settings import KafkaSettings
from fleet.catalog import HTTP_SERVICES, WORKERS

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".cache" / "go" / "bin"
SCHEMAS = ROOT / ".cache" / "k8s-schemas"
OVERLAYS = ("dev", "prod")
KAFKA_SHARED = "eventfleet-kafka"  # bootstrap-servers and ca.crt only: no credentials
WORKLOADS = WORKERS + HTTP_SERVICES
METRICS = ("eventfleet_events_total", "eventfleet_handler_duration_seconds_bucket", "eventfleet_consumer_lag",
           "eventfleet_outbox_backlog", "eventfleet_last_commit_timestamp_seconds", "eventfleet_store_commit_seconds_bucket")


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():  # fail, never skip: the manifests would go unchecked
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run `make k8s-tools` (or `make test`, which runs it)", pytrace=False)
    return str(path)


def schema_locations() -> list[str]:
    if not (SCHEMAS / ".built").exists():
        pytest.fail(f"{SCHEMAS.relative_to(ROOT)} is not built: run `make k8s-schemas` (or `make test`)", pytrace=False)
    return ["-schema-location", f"{SCHEMAS}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            "-schema-location", f"{SCHEMAS}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json"]


def build(overlay_dir: Path) -> str:
    done = subprocess.run([tool("kustomize"), "build", str(overlay_dir)], capture_output=True, text=True)
    assert done.returncode == 0, f"kustomize build {overlay_dir} failed:\n{done.stderr}"
    return done.stdout


def kubeconform(manifests: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("kubeconform"), "-strict", "-summary", *schema_locations(), "-"],
                          input=manifests, capture_output=True, text=True)


def by_kind(manifests: str) -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(manifests) if doc}


def settings_of(service: str):
    module = importlib.import_module(f"services.{service}.settings")
    return next(getattr(module, name) for name in module.__all__ if name.endswith("Settings"))


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def user_secret(service: str) -> str:
    return f"eventfleet-kafka-user-{service}"


def file_source(pod: dict, container: dict, path: str | None) -> tuple[str, str, dict, dict] | None:
    """(Secret name, key, mount, volume) of the Secret file a path names, through the container's deepest mount holding it."""
    if not path:
        return None
    mounts = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), {})
    secret = volume.get("secret")
    if secret is None:
        return None
    relative = path[len(mount["mountPath"].rstrip("/")) + 1:]
    items = secret.get("items")
    key = relative if items is None else next((i["key"] for i in items if i["path"] == relative), None)
    return (secret["secretName"], key, mount, volume) if key else None


def kafka_credential_problems(docs: dict[tuple[str, str], dict], service: str) -> list[str]:
    """A workload logs in as its own user (the default: its service's name) with the password file of its own Secret."""
    deployment = docs.get(("Deployment", service))
    if deployment is None:
        return [f"{service}: no Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = next((c for c in pod["containers"] if c["name"] == service), pod["containers"][0])
    env = env_of(container)
    problems = []
    for name in ("FLEET_KAFKA_SECURITY_PROTOCOL", "FLEET_KAFKA_SASL_MECHANISM"):
        if not env.get(name, {}).get("valueFrom", {}).get("configMapKeyRef", {}).get("name", "").startswith("eventfleet-kafka-config"):
            problems.append(f"{service}: {name} must come from the overlay's ConfigMap eventfleet-kafka-config")
    if "FLEET_KAFKA_SASL_USERNAME" in env:  # unset: a worker is User:<service>, the principal `fleet acl plan` grants
        problems.append(f"{service}: FLEET_KAFKA_SASL_USERNAME is set; the default user is the service's own name")
    if "FLEET_KAFKA_SASL_PASSWORD" in env:
        problems.append(f"{service}: the password must be a mounted file (FLEET_KAFKA_SASL_PASSWORD_FILE), not FLEET_KAFKA_SASL_PASSWORD")
    if "FLEET_KAFKA_CREDENTIALS_DIR" in env:
        problems.append(f"{service}: FLEET_KAFKA_CREDENTIALS_DIR is for the local secure broker, not Kubernetes")
    password_file = env.get("FLEET_KAFKA_SASL_PASSWORD_FILE", {}).get("value")
    source = file_source(pod, container, password_file)
    if source is None:
        problems.append(f"{service}: FLEET_KAFKA_SASL_PASSWORD_FILE ({password_file}) is not a file of a mounted Secret")
    else:
        secret, key, mount, volume = source
        if service not in secret or secret != user_secret(service):
            problems.append(f"{service}: its Kafka password comes from Secret {secret}, not its own {user_secret(service)}")
        if key != "password":
            problems.append(f"{service}: its Kafka password is key {key!r} of {secret}, not 'password'")
        if "subPath" in mount or not mount.get("readOnly") or "items" in volume["secret"]:
            problems.append(f"{service}: {secret} must be a read-only whole-Secret directory mount (no subPath, no items)")
        if not volume["secret"].get("optional"):
            problems.append(f"{service}: {secret} must be optional (the dev overlay's PLAINTEXT broker needs no password)")
        if volume["secret"].get("defaultMode", 0o644) & 0o007:
            problems.append(f"{service}: {secret} is readable by others (defaultMode {oct(volume['secret'].get('defaultMode', 0o644))})")
    ca = file_source(pod, container, env.get("FLEET_KAFKA_SSL_CAFILE", {}).get("value"))
    if ca is None or ca[:2] != (KAFKA_SHARED, "ca.crt"):
        problems.append(f"{service}: FLEET_KAFKA_SSL_CAFILE must be ca.crt of the shared Secret {KAFKA_SHARED}")
    if env.get("FLEET_KAFKA_BOOTSTRAP_SERVERS", {}).get("valueFrom", {}).get("secretKeyRef", {}).get("name") != KAFKA_SHARED:
        problems.append(f"{service}: FLEET_KAFKA_BOOTSTRAP_SERVERS must come from the shared Secret {KAFKA_SHARED}")
    return problems


def password_secret(docs: dict[tuple[str, str], dict], service: str) -> str | None:
    deployment = docs.get(("Deployment", service))
    if deployment is None:
        return None
    pod = deployment["spec"]["template"]["spec"]
    container = next((c for c in pod["containers"] if c["name"] == service), pod["containers"][0])
    source = file_source(pod, container, env_of(container).get("FLEET_KAFKA_SASL_PASSWORD_FILE", {}).get("value"))
    return source[0] if source else None


def trigger_auth_problems(docs: dict[tuple[str, str], dict], service: str, auth_name: str) -> list[str]:
    """KEDA reads the group's lag as the worker itself: its user name, the password Secret its pods read, the shared CA."""
    auth = docs[("TriggerAuthentication", auth_name)]["spec"]
    params: dict[str, tuple[str, str, str]] = {}
    for kind, refs in (("Secret", auth.get("secretTargetRef", [])), ("ConfigMap", auth.get("configMapTargetRef", []))):
        for ref in refs:
            params[ref["parameter"]] = (kind, ref["name"], ref["key"])
    problems = []
    username = params.get("username")
    if username is None or username[0] != "ConfigMap":
        problems.append(f"{service}: TriggerAuthentication {auth_name} must take the user name from a ConfigMap (it is no secret)")
    else:
        value = docs.get(("ConfigMap", username[1]), {}).get("data", {}).get(username[2])
        if value != service:
            problems.append(f"{service}: KEDA logs in as {value!r}, not as the worker's own user {service!r}")
    if params.get("password") != ("Secret", password_secret(docs, service), "password"):
        problems.append(f"{service}: TriggerAuthentication {auth_name} must read the password its pods read "
                        f"({password_secret(docs, service)}), not {params.get('password')}")
    if params.get("ca") != ("Secret", KAFKA_SHARED, "ca.crt"):
        problems.append(f"{service}: TriggerAuthentication {auth_name} must trust ca.crt of {KAFKA_SHARED}")
    return problems


def probe_problems(where: str, container: dict, probe: str, path: str, port: int) -> list[str]:
    spec = container.get(probe)
    if not spec or "httpGet" not in spec:
        return [f"{where}: no HTTP {probe}"]
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    target = spec["httpGet"]["port"]
    target = ports.get(target) if isinstance(target, str) else target
    problems = []
    if spec["httpGet"]["path"] != path:
        problems.append(f"{where}: {probe} on {spec['httpGet']['path']}, not {path}")
    if target != port:
        problems.append(f"{where}: {probe} on port {target}, not {port}")
    return problems


def worker_problems(docs: dict[tuple[str, str], dict], service: str) -> list[str]:
    """Everything docs/operations.md promises about one worker's manifests, as a list of what is wrong."""
    settings = settings_of(service)
    prefix = service.upper()
    port = settings.model_fields["http_port"].default
    group = settings.model_fields["group_id"].default
    deployment = docs.get(("Deployment", service))
    if deployment is None:
        return [f"{service}: no Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = next((c for c in pod["containers"] if c["name"] == service), None)
    if container is None:
        return [f"{service}: no container named {service}"]
    problems = []
    if container.get("args") != [service] or "command" in container:
        problems.append(f"{service}: the container must run `fleet run {service}` (args [{service!r}] after the image's ENTRYPOINT)")
    problems += probe_problems(service, container, "livenessProbe", "/health/live", port)
    problems += probe_problems(service, container, "readinessProbe", "/health/ready", port)
    if "httpGet" not in container.get("startupProbe", {}):
        problems.append(f"{service}: no HTTP startupProbe")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace > KafkaSettings().graceful_timeout_s:
        problems.append(f"{service}: terminationGracePeriodSeconds {grace} is not above the {KafkaSettings().graceful_timeout_s} s graceful bound")
    resources = container.get("resources", {})
    if not {"cpu", "memory"} <= set(resources.get("requests", {})) or not {"cpu", "memory"} <= set(resources.get("limits", {})):
        problems.append(f"{service}: cpu and memory requests and limits are needed")
    env = env_of(container)
    if env.get(f"{prefix}_HTTP_HOST", {}).get("value") != "0.0.0.0":
        problems.append(f"{service}: {prefix}_HTTP_HOST must be 0.0.0.0")
    if env.get(f"{prefix}_HTTP_PORT", {}).get("value") != str(port):
        problems.append(f"{service}: {prefix}_HTTP_PORT must be {port}")
    if env.get("FLEET_REPLICA_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        problems.append(f"{service}: FLEET_REPLICA_ID must come from the pod name (downward API)")
    problems += kafka_credential_problems(docs, service)
    # Keys: Secrets mounted as files (whole directories, so rotation reaches running pods) at FLEET_KEYS_DIR.
    keys_dir = env.get("FLEET_KEYS_DIR", {}).get("value")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    for path, secret in ((keys_dir, "eventfleet-keyring"), (f"{keys_dir}/private/{service}", f"eventfleet-signing-key-{service}")):
        mount = mounts.get(path)
        volume = volumes.get(mount["name"]) if mount else None
        if not volume or volume.get("secret", {}).get("secretName") != secret:
            problems.append(f"{service}: Secret {secret} is not mounted at {path}")
        elif "subPath" in mount or not mount.get("readOnly"):
            problems.append(f"{service}: {secret} must be a read-only directory mount (no subPath: rotation must reach the pod)")
    if volumes.get(mounts.get(keys_dir, {}).get("name"), {}).get("secret", {}).get("items", [{}])[0].get("path") != "keyring.json":
        problems.append(f"{service}: the keyring Secret must put keyring.json at {keys_dir}/keyring.json")
    # Its metrics Service, its PDB, its ScaledObject.
    selects = lambda selector: selector and all(pod_labels.get(k) == v for k, v in selector.items())  # noqa: E731
    if not any(d["kind"] == "Service" and selects(d["spec"].get("selector")) and any(p.get("port") == port for p in d["spec"]["ports"])
               for d in docs.values()):
        problems.append(f"{service}: no Service exposes its metrics port {port}")
    if not any(d["kind"] == "PodDisruptionBudget" and selects(d["spec"]["selector"].get("matchLabels")) for d in docs.values()):
        problems.append(f"{service}: no PodDisruptionBudget")
    scaled = [d for d in docs.values() if d["kind"] == "ScaledObject" and d["spec"]["scaleTargetRef"]["name"] == service]
    if len(scaled) != 1:
        return problems + [f"{service}: {len(scaled)} ScaledObjects, not 1"]
    spec = scaled[0]["spec"]
    partitions = min(topic.partitions for topic in REGISTRY.consumed_in_group_by(service))
    if not spec.get("maxReplicaCount", 100) <= partitions:
        problems.append(f"{service}: maxReplicaCount {spec.get('maxReplicaCount')} is above its topics' {partitions} partitions")
    triggers = [t for t in spec["triggers"] if t["type"] == "kafka"]
    if [t["metadata"].get("consumerGroup") for t in triggers] != [group]:
        problems.append(f"{service}: the ScaledObject must have one kafka trigger on its own group {group!r}")
    else:
        trigger = triggers[0]
        if "lagThreshold" not in trigger["metadata"]:
            problems.append(f"{service}: no lagThreshold")
        auth = trigger.get("authenticationRef", {}).get("name")
        if ("TriggerAuthentication", auth) not in docs:
            problems.append(f"{service}: its trigger's TriggerAuthentication {auth!r} is not in the manifests")
        else:
            problems += trigger_auth_problems(docs, service, auth)
    return problems


def fleet_problems(docs: dict[tuple[str, str], dict]) -> list[str]:
    problems = [p for service in WORKERS for p in worker_problems(docs, service)]
    gateway = docs.get(("Deployment", "gateway"))
    if gateway is None:
        problems.append("gateway: no Deployment")
    else:
        container = gateway["spec"]["template"]["spec"]["containers"][0]
        for probe in ("livenessProbe", "readinessProbe"):
            problems += probe_problems("gateway", container, probe, "/health", 8080)
        if env_of(container).get("GATEWAY_HOST", {}).get("value") != "0.0.0.0":
            problems.append("gateway: GATEWAY_HOST must be 0.0.0.0")
        problems += kafka_credential_problems(docs, "gateway")
    # One Kafka user per workload: no two read their password from one Secret.
    users: dict[str, list[str]] = {}
    for service in WORKLOADS:
        if (secret := password_secret(docs, service)) is not None:
            users.setdefault(secret, []).append(service)
    problems += [f"{' and '.join(shared)} share the Kafka user Secret {secret}" for secret, shared in users.items() if len(shared) > 1]
    if ("Service", "gateway") not in docs:
        problems.append("gateway: no Service")
    monitors = [d for d in docs.values() if d["kind"] == "ServiceMonitor"]
    if not any(e.get("path") == "/metrics" for m in monitors for e in m["spec"]["endpoints"]):
        problems.append("no ServiceMonitor scrapes /metrics")
    dashboards = [d for d in docs.values() if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    if len(dashboards) != 1:
        problems.append(f"{len(dashboards)} dashboard ConfigMaps labelled grafana_dashboard=1, not 1")
    return problems


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, str]:
    return request.param, build(ROOT / "deploy" / "k8s" / "overlays" / request.param)


def test_overlay_is_valid_under_kubeconform(overlay):
    name, manifests = overlay
    done = kubeconform(manifests)
    assert done.returncode == 0, f"kubeconform refused the {name} overlay:\n{done.stdout}{done.stderr}"
    assert "Invalid: 0, Errors: 0, Skipped: 0" in done.stdout, done.stdout


def test_every_worker_is_wired_as_documented(overlay):
    name, manifests = overlay
    assert fleet_problems(by_kind(manifests)) == []


def test_overlays_pick_their_kafka_security_and_sizes():
    dev, prod = (by_kind(build(ROOT / "deploy" / "k8s" / "overlays" / o)) for o in OVERLAYS)
    config = lambda docs: next(d for (k, n), d in docs.items() if k == "ConfigMap" and n.startswith("eventfleet-kafka-config"))  # noqa: E731
    assert config(dev)["data"]["security-protocol"] == "PLAINTEXT"
    assert config(prod)["data"]["security-protocol"] == "SASL_SSL"
    assert config(prod)["data"]["sasl-mechanism"].startswith("SCRAM-SHA-")
    for service in WORKERS:
        assert dev[("Deployment", service)]["spec"]["replicas"] == 1
        assert dev[("ScaledObject", service)]["spec"]["maxReplicaCount"] == 1  # SQLite: one replica per file
        assert prod[("ScaledObject", service)]["spec"]["minReplicaCount"] >= 2
        trigger = prod[("ScaledObject", service)]["spec"]["triggers"][0]["metadata"]
        assert (trigger["sasl"], trigger["tls"]) == ("scram_sha512", "enable")
    # Prod credentials never come from the repository: neither the shared Secret nor any service's password.
    assert not [n for k, n in prod if k == "Secret" and n.startswith(KAFKA_SHARED)]
    assert {user_secret(s) for s in WORKLOADS} <= {n for k, n in dev if k == "Secret"}
    assert all(dev[("Secret", user_secret(s))]["data"]["password"] == "" for s in WORKLOADS)  # dev: PLAINTEXT, no passwords


def test_dashboard_configmap_carries_the_raw_json_and_the_metrics():
    raw = (ROOT / "deploy" / "grafana" / "eventfleet.json").read_text()
    docs = by_kind(build(ROOT / "deploy" / "k8s" / "overlays" / "prod"))
    assert docs[("ConfigMap", "eventfleet-dashboard")]["data"]["eventfleet.json"] == raw
    exprs = " ".join(t["expr"] for panel in json.loads(raw)["panels"] for t in panel["targets"])
    for metric in METRICS:
        assert metric in exprs, metric
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs


def test_a_broken_manifest_fails(tmp_path):
    """The checks bite: a misspelt field fails kubeconform, a seventh replica and a missing probe fail the wiring check."""
    shutil.copytree(ROOT / "deploy" / "k8s", tmp_path / "deploy" / "k8s")
    shutil.copytree(ROOT / "deploy" / "grafana", tmp_path / "deploy" / "grafana")
    payments = tmp_path / "deploy" / "k8s" / "base" / "workers" / "payments.yaml"
    text = payments.read_text()
    payments.write_text(text.replace("terminationGracePeriodSeconds: 45", "terminationGracePeriodSecond: 45", 1))
    done = kubeconform(build(tmp_path / "deploy" / "k8s" / "overlays" / "prod"))
    assert done.returncode != 0 and "terminationGracePeriodSecond" in done.stdout, done.stdout

    payments.write_text(text.replace("maxReplicaCount: 6 ", "maxReplicaCount: 12 ", 1).replace("/health/ready", "/health/live"))
    prod = tmp_path / "deploy" / "k8s" / "overlays" / "prod" / "kustomization.yaml"
    prod.write_text(prod.read_text().replace("/spec/maxReplicaCount, value: 6}", "/spec/maxReplicaCount, value: 12}"))
    manifests = build(tmp_path / "deploy" / "k8s" / "overlays" / "prod")
    assert kubeconform(manifests).returncode == 0  # valid Kubernetes, wrong fleet
    problems = fleet_problems(by_kind(manifests))
    assert any("payments: readinessProbe on /health/live" in p for p in problems), problems
    assert sum("maxReplicaCount 12" in p for p in problems) == len(WORKERS), problems


def test_each_workload_logs_in_with_its_own_secret(tmp_path):
    """The credential checks bite: a borrowed password Secret, a shared user name, a KEDA login as another user."""
    shutil.copytree(ROOT / "deploy" / "k8s", tmp_path / "deploy" / "k8s")
    shutil.copytree(ROOT / "deploy" / "grafana", tmp_path / "deploy" / "grafana")
    base = tmp_path / "deploy" / "k8s" / "base"
    inventory = base / "workers" / "inventory.yaml"
    inventory.write_text(inventory.read_text().replace("secretName: eventfleet-kafka-user-inventory", "secretName: eventfleet-kafka-user-payments"))
    gateway = base / "gateway.yaml"
    gateway.write_text(gateway.read_text().replace(
        "            - {name: FLEET_KAFKA_SASL_PASSWORD_FILE, value: /etc/eventfleet/kafka-user/password}\n",
        "            - {name: FLEET_KAFKA_SASL_PASSWORD_FILE, value: /etc/eventfleet/kafka-user/password}\n"
        "            - name: FLEET_KAFKA_SASL_USERNAME\n"
        "              valueFrom: {secretKeyRef: {name: eventfleet-kafka, key: username, optional: true}}\n"))
    auth = base / "kafka-auth.yaml"
    auth.write_text(auth.read_text().replace("tracker: tracker}", "tracker: payments}"))
    manifests = build(tmp_path / "deploy" / "k8s" / "overlays" / "prod")
    assert kubeconform(manifests).returncode == 0  # valid Kubernetes, wrong fleet
    problems = fleet_problems(by_kind(manifests))
    assert any(p.startswith("inventory: its Kafka password comes from Secret eventfleet-kafka-user-payments") for p in problems), problems
    assert "payments and inventory share the Kafka user Secret eventfleet-kafka-user-payments" in problems, problems
    assert any(p.startswith("inventory: TriggerAuthentication eventfleet-kafka-user-inventory must read the password") for p in problems), problems
    assert any(p.startswith("gateway: FLEET_KAFKA_SASL_USERNAME is set") for p in problems), problems
    assert "tracker: KEDA logs in as 'payments', not as the worker's own user 'tracker'" in problems, problems
    assert not [p for p in problems if p.startswith(("shipping", "notifications"))], problems
