# Every set-up step lives here: a clean clone needs only Python 3.11, Java 17 and Maven.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLEET := $(BIN)/fleet
INSTALLED := $(VENV)/.installed

.PHONY: help install run test unit integration kafka kafka-test kafka-stop kafka-logs postgres postgres-stop topics demo chaos docs-tools debian-tools clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(INSTALLED) ## Create .venv and install the project with its test tools

run: install kafka ## Start the broker, the topics, the fleet and a demo feed; Ctrl-C stops it all
	$(FLEET) up --demo

# The tests' own broker (port 19092, data in .cache/kafka-test): `make run` and `make test` never share topics or groups.
TEST_ENV := FLEET_KAFKA_HOME=$(CURDIR)/.cache/kafka-test FLEET_KAFKA_PORT=19092 FLEET_KAFKA_CONTROLLER_PORT=19093 \
	FLEET_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092

test: install kafka-test postgres docs-tools debian-tools ## The whole suite: `fleet check` (docs/contracts.md), unit tests and integration tests on the real broker
	$(FLEET) check
	$(TEST_ENV) $(BIN)/pytest

unit: install ## Only the fast tests (no broker)
	$(BIN)/pytest tests/unit

integration: install kafka-test postgres ## Only the tests on the real broker
	$(TEST_ENV) $(BIN)/pytest tests/integration

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
	$(BIN)/python -m fleet.postgres_local start

postgres-stop: install ## Stop the local PostgreSQL cluster
	$(BIN)/python -m fleet.postgres_local stop

chaos: install ## Every chaos scenario with 2000 orders each, on a broker of its own; figures in reports/chaos.json
	$(BIN)/python -m tests.chaos --orders 2000

topics: kafka ## Create or update the registry's topics on the broker
	$(FLEET) topics apply

demo: topics ## Publish 20 demo orders
	$(FLEET) demo --orders 20

clean: ## Remove the virtual environment and local state (keeps the Maven cache)
	-$(FLEET) kafka stop
	-$(TEST_ENV) $(FLEET) kafka stop
	-$(BIN)/python -m fleet.postgres_local stop
	rm -rf $(VENV) .cache .fleet
