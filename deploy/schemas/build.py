"""Builds the deploy checks' JSON schemas offline: Kubernetes kinds, KEDA and Prometheus Operator CRDs, and the compose spec."""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# The sources, all fetched through the Go module proxy (no GitHub access needed). Change a version here, and
# `make k8s-schemas` rebuilds (its stamp depends on this file).
KUBERNETES = "k8s.io/kubernetes@v1.34.0"
KEDA = "github.com/kedacore/keda/v2@v2.21.0"
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
COMPOSE_GO = "github.com/compose-spec/compose-go/v2@v2.16.2"
SWAGGER = "api/openapi-spec/swagger.json"
COMPOSE_SCHEMA = "schema/compose-spec.json"  # copied to <out>/compose-spec/compose-spec.json for tests/integration/test_compose.py
CRD_FILES = {
    KEDA: ["config/crd/bases/keda.sh_scaledobjects.yaml", "config/crd/bases/keda.sh_scaledjobs.yaml",
           "config/crd/bases/keda.sh_triggerauthentications.yaml", "config/crd/bases/keda.sh_clustertriggerauthentications.yaml"],
    PROMETHEUS_OPERATOR: ["example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
                          "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
                          "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"],
}

# How kubeconform names the files (its -schema-location templates, see the Makefile):
#   built-in kinds: {{ .ResourceKind }}{{ .KindSuffix }}.json, e.g. deployment-apps-v1.json, service-v1.json
#   CRDs:           {{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json, e.g. keda.sh/scaledobject_v1alpha1.json
REF_PREFIX = "#/definitions/"
INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def module_dir(module: str) -> Path:
    """The module's folder in the Go module cache, downloading it through the proxy if needed."""
    with tempfile.TemporaryDirectory() as empty:  # outside any go.mod
        out = subprocess.run(["go", "mod", "download", "-json", module], cwd=empty, check=True,
                             capture_output=True, text=True, env=os.environ).stdout
    info = json.loads(out)
    if "Dir" not in info:
        raise SystemExit(f"go mod download {module}: {info.get('Error', out)}")
    return Path(info["Dir"])


def strict(schema: dict) -> dict:
    """Objects with listed properties accept nothing else, unless the schema says unknown fields are kept."""
    if isinstance(schema, dict):
        for value in schema.values():
            if isinstance(value, dict):
                strict(value)
            elif isinstance(value, list):
                for item in value:
                    strict(item)
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    return schema


class Swagger:
    """Turns swagger.json definitions into standalone schemas: every $ref inlined, recursive ones kept local."""

    def __init__(self, definitions: dict) -> None:
        self.definitions = definitions

    def _special(self, name: str) -> dict | None:
        if name.endswith("util.intstr.IntOrString"):
            return copy.deepcopy(INT_OR_STRING)
        if name.endswith("api.resource.Quantity"):
            return copy.deepcopy(QUANTITY)
        return None

    def _inline(self, node, stack: tuple[str, ...], local: set[str]):
        if isinstance(node, list):
            return [self._inline(item, stack, local) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            name = ref[len(REF_PREFIX):]
            special = self._special(name)
            if special is not None:
                return special
            if name in stack:  # a recursive type (JSONSchemaProps): a local reference instead of endless inlining
                local.add(name)
                return {"$ref": REF_PREFIX + name}
            body = self._inline(self.definitions[name], (*stack, name), local)
            extra = {k: v for k, v in node.items() if k != "$ref" and k != "description"}
            return {**body, **extra} if extra else body
        if node.get("format") == "int-or-string":
            return copy.deepcopy(INT_OR_STRING)
        return {key: self._inline(value, stack, local) for key, value in node.items()}

    def standalone(self, name: str) -> dict:
        local: set[str] = set()
        root = self._inline(self.definitions[name], (name,), local)
        done: dict[str, dict] = {}
        while local - done.keys():
            pending = sorted(local - done.keys())
            for dep in pending:
                done[dep] = self._inline(self.definitions[dep], (dep,), local)
        if name in local:
            done[name] = copy.deepcopy(root)
        schema = {"$schema": "http://json-schema.org/schema#", **root}
        if done:
            schema["definitions"] = done
        return strict(schema)


def kind_file(group: str, version: str, kind: str) -> str:
    suffix = f"-{group.split('.')[0].lower()}-{version.lower()}" if group else f"-{version.lower()}"
    return f"{kind.lower()}{suffix}.json"


def build_kubernetes(swagger_path: Path, out: Path) -> int:
    definitions = json.loads(swagger_path.read_text())["definitions"]
    swagger = Swagger(definitions)
    written = 0
    for name, definition in sorted(definitions.items()):
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            target = out / kind_file(gvk["group"], gvk["version"], gvk["kind"])
            if target.exists():
                continue  # DeleteOptions and WatchEvent list many kinds; the first definition wins
            target.write_text(json.dumps(swagger.standalone(name), indent=1, sort_keys=True))
            written += 1
    return written


def build_crds(crd_path: Path, out: Path) -> int:
    written = 0
    for crd in yaml.safe_load_all(crd_path.read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            target = out / group / f"{kind.lower()}_{version['name']}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(strict({"$schema": "http://json-schema.org/schema#", **schema}), indent=1, sort_keys=True))
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(".cache/k8s-schemas"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    count = build_kubernetes(module_dir(KUBERNETES) / SWAGGER, args.out)
    print(f"{count} Kubernetes kind schemas from {KUBERNETES}")
    for module, files in CRD_FILES.items():
        root = module_dir(module)
        count = sum(build_crds(root / file, args.out) for file in files)
        print(f"{count} CRD schemas from {module}")
    compose = args.out / "compose-spec" / "compose-spec.json"
    compose.parent.mkdir(parents=True, exist_ok=True)
    compose.write_text((module_dir(COMPOSE_GO) / COMPOSE_SCHEMA).read_text())
    print(f"the compose-spec schema from {COMPOSE_GO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
