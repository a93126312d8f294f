# Every set-up step lives here: a clean clone needs only Python 3.11, Java 17 and Maven.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLEET := $(BIN)/fleet
INSTALLED := $(VENV)/.installed

.PHONY: help install run test lint unit integration k8s-tools k8s-schemas check-manifests kafka kafka-test kafka-stop kafka-logs postgres postgres-stop topics demo chaos docs-tools debian-tools clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

install: $(INSTALLED) ## Create .venv and install the project with its test tools

run: install kafka ## Start the broker, the topics, the fleet and a demo feed; Ctrl-C stops it all
	$(FLEET) up --demo

# The tests' own broker (port 19092, data in .cache/kafka-test): `make run` and `make test` never share topics or groups.
TEST_ENV := FLEET_KAFKA_HOME=$(CURDIR)/.cache/kafka-test FLEET_KAFKA_PORT=19092 FLEET_KAFKA_CONTROLLER_PORT=19093 \
	FLEET_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092

test: install lint kafka-test postgres docs-tools debian-tools check-manifests ## The whole suite: lint, `fleet check` (docs/contracts.md), manifests, unit and integration tests
	$(FLEET) check
	$(TEST_ENV) $(BIN)/pytest

# ruff (lint, and the format check), mypy, and import-linter's contracts (pyproject.toml; docs/architecture.md).
lint: install ## ruff (lint and format check), mypy and the import rule over contracts, fleet and services
	$(BIN)/ruff check contracts fleet services
	$(BIN)/ruff format --check contracts fleet services
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install ## Only the fast tests (no broker)
	$(BIN)/pytest tests/unit

integration: install kafka-test postgres k8s-tools k8s-schemas ## Only the integration tests (the real broker, the deploy manifests)
	$(TEST_ENV) $(BIN)/pytest tests/integration

# Deploy manifests (deploy/k8s, docker-compose.yml; docs/operations.md). kustomize and kubeconform are built with Go into
# .cache/go/bin; the schemas come from Go modules through the module proxy (no GitHub needed): Kubernetes' swagger.json,
# the KEDA and Prometheus Operator CRDs, the compose-spec schema. Each is made once; a version change remakes it.
GO_ENV := GOPATH=$(CURDIR)/.cache/go GOMODCACHE=$(CURDIR)/.cache/go/mod GOCACHE=$(CURDIR)/.cache/go/build \
	GOBIN=$(CURDIR)/.cache/go/bin GOFLAGS="-modcacherw -buildvcs=false"
KUBECONFORM_VERSION := v0.7.0
KUSTOMIZE_VERSION := v5.7.1
KUBECONFORM := .cache/go/bin/kubeconform
KUSTOMIZE := .cache/go/bin/kustomize
K8S_TOOLS := .cache/go/.k8s-tools-$(KUBECONFORM_VERSION)-$(KUSTOMIZE_VERSION)
K8S_SCHEMAS := .cache/k8s-schemas/.built
K8S_SCHEMA_LOCATIONS := -schema-location '.cache/k8s-schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json' \
	-schema-location '.cache/k8s-schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'

$(K8S_TOOLS):
	@command -v go >/dev/null || { echo "Go is needed to build kubeconform and kustomize (https://go.dev/dl, or apt-get install golang-go)"; exit 1; }
	$(GO_ENV) go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
	$(GO_ENV) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	touch $@

k8s-tools: $(K8S_TOOLS) ## Build kubeconform and kustomize into .cache/go/bin (once)

$(K8S_SCHEMAS): deploy/schemas/build.py | $(INSTALLED)
	@command -v go >/dev/null || { echo "Go is needed to fetch the schemas' modules through the Go module proxy"; exit 1; }
	rm -rf .cache/k8s-schemas
	$(GO_ENV) $(BIN)/python deploy/schemas/build.py --out .cache/k8s-schemas
	touch $@

k8s-schemas: install $(K8S_SCHEMAS) ## Build kubeconform's schemas (Kubernetes, KEDA, Prometheus Operator) and the compose schema into .cache/k8s-schemas

check-manifests: k8s-tools k8s-schemas ## Validate both Kubernetes overlays (kustomize build | kubeconform -strict)
	@for overlay in deploy/k8s/overlays/*/; do \
		echo "$$overlay"; \
		$(KUSTOMIZE) build $$overlay | $(KUBECONFORM) -strict -summary $(K8S_SCHEMA_LOCATIONS) - || exit 1; \
	done

# Node tools of the docs (the AsyncAPI parser and the React component's standalone bundle), pinned by package-lock.json.
DOCS_TOOLS := docs/tools/node_modules/.installed
$(DOCS_TOOLS): docs/tools/package.json docs/tools/package-lock.json
	npm ci --prefix docs/tools --no-audit --no-fund --loglevel=error
	touch $@

docs-tools: $(DOCS_TOOLS) ## Install the docs' Node tools (npm ci into docs/tools/node_modules)

# The offline docs site (docs/asyncapi-docs.md): the fleet graph and the rendered AsyncAPI document, no network needed.
.PHONY: docs docs-serve
docs: install docs-tools debian-tools ## Build the offline docs site into docs/site/ (fleet docs build)
	$(FLEET) docs build

docs-serve: docs ## Serve docs/site/ on http://127.0.0.1:8100 until Ctrl-C (fleet docs serve)
	$(FLEET) docs serve --port 8100

# Debian's Chromium (the docs' browser test) and graphviz (the fleet graph), when missing.
debian-tools: ## Install Debian's chromium and graphviz if they are missing
	@command -v chromium >/dev/null && command -v dot >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium graphviz; }

kafka-test: install ## Start the tests' broker (127.0.0.1:19092); returns when it answers
	$(TEST_ENV) $(FLEET) kafka start

kafka: install ## Start the local Kafka broker (KRaft, 127.0.0.1:9092); returns when it answers
	$(FLEET) kafka start

kafka-stop: install ## Stop the local Kafka broker
	$(FLEET) kafka stop

kafka-logs: install ## Show the local broker's log
	$(FLEET) kafka logs

# A throwaway PostgreSQL cluster for the store's tests (data in .cache/postgres): installs Debian's package if missing.
postgres: install ## Start the local PostgreSQL cluster (127.0.0.1:55432); returns when it accepts connections
	$(BIN)/python -m fleet.local.postgres start

postgres-stop: install ## Stop the local PostgreSQL cluster
	$(BIN)/python -m fleet.local.postgres stop

# The secure local broker (docs/security.md): TLS with a throwaway CA, SASL/SCRAM-SHA-512 with one user per service, and
# ACLs (nothing is allowed that `fleet acl plan` does not list). Its own data and ports (9094, controller 9095): the plaintext
# broker (9092) and the three-node cluster (9192-9393) stay as they are.
SECURE_ENV := FLEET_KAFKA_HOME=$(CURDIR)/.cache/kafka-secure FLEET_KAFKA_PORT=9094 FLEET_KAFKA_CONTROLLER_PORT=9095
.PHONY: kafka-secure kafka-secure-stop run-secure
kafka-secure: install ## Start the secure broker (127.0.0.1:9094: TLS, SCRAM, ACLs) with the registry's topics and the fleet's ACLs
	$(SECURE_ENV) $(FLEET) kafka start --secure
	set -a && . .cache/kafka-secure/secure/fleet.env && set +a && $(FLEET) topics apply && $(FLEET) acl apply

kafka-secure-stop: install ## Stop the secure broker
	$(SECURE_ENV) $(FLEET) kafka stop

run-secure: kafka-secure ## `make run` on the secure broker: each worker logs in as its own service
	$(SECURE_ENV) $(FLEET) up --demo

# Three brokers on loopback (docs/delivery.md): KRaft nodes 1-3 on 9192, 9292, 9392 (controllers on the next port), data in
# .cache/kafka-cluster/node-N; the registry's topics get replication factor 3 and min.insync.replicas 2 there.
.PHONY: kafka-cluster kafka-cluster-stop
kafka-cluster: install ## Start the local three-node KRaft cluster (127.0.0.1:9192,9292,9392) and its topics (RF 3, min ISR 2)
	$(BIN)/python -m fleet.local.kafka_cluster start
	FLEET_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9192,127.0.0.1:9292,127.0.0.1:9392 $(FLEET) topics apply --replication-factor 3

kafka-cluster-stop: install ## Stop the local three-node cluster
	$(BIN)/python -m fleet.local.kafka_cluster stop

chaos: install ## Every chaos scenario with 2000 orders each, on a broker of its own; figures in reports/chaos.json
	$(BIN)/python -m tests.chaos --orders 2000

# What an event costs, side by side, on a broker of its own (127.0.0.1:29492, fresh data in .cache/kafka-bench): docs/performance.md.
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS='--events 500 --runs 1'.
.PHONY: bench
BENCH_INSTALLED := $(VENV)/.bench-installed
$(BENCH_INSTALLED): pyproject.toml | $(INSTALLED)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench: install $(BENCH_INSTALLED) ## Kafka's ceiling, raw aiokafka, plain FastStream and the eventfleet relay side by side, the flow's latency, scaling; reports/bench.json and bench.png
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

# One worker setting at two values, the flow at one offered rate, in ABBA order (docs/performance.md); e.g. the metadata
# refresh the fleet sets against aiokafka's default. PAIR_ARGS passes other options (--pairs, --window).
.PHONY: bench-pair
PAIR_SETTING ?= FLEET_KAFKA_METADATA_MAX_AGE_MS=300000,10000
PAIR_RATE ?= 440
bench-pair: install $(BENCH_INSTALLED) ## A setting at two values, side by side, on the order flow; reports/bench-pair.json
	$(BIN)/python -m tests.bench.pair --setting $(PAIR_SETTING) --rate $(PAIR_RATE) $(PAIR_ARGS)

topics: kafka ## Create or update the registry's topics on the broker
	$(FLEET) topics apply

demo: topics ## Publish 20 demo orders
	$(FLEET) demo --orders 20

clean: ## Remove the virtual environment and local state (keeps the Maven cache)
	-$(FLEET) kafka stop
	-$(TEST_ENV) $(FLEET) kafka stop
	-$(SECURE_ENV) $(FLEET) kafka stop
	-$(BIN)/python -m fleet.local.kafka_cluster stop
	-FLEET_KAFKA_HOME=$(CURDIR)/.cache/kafka-secure-test FLEET_KAFKA_PORT=19292 FLEET_KAFKA_CONTROLLER_PORT=19293 $(FLEET) kafka stop
	-$(BIN)/python -m fleet.local.postgres stop
	rm -rf $(VENV) .cache .fleet
