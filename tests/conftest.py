"""Session-wide test setup: a throwaway set of dev keys that every worker, subprocess and helper of the run uses."""

import os
import tempfile
from pathlib import Path

import pytest

from fleet.runtime.keys import UPSTREAM_SIGNERS, init_keys
from fleet.catalog import WORKERS

# The tests' own broker, unless the caller chose one: never the broker `make run` uses, so neither sees the other's
# records. Set before anything reads settings; subprocesses inherit it.
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("FLEET_KAFKA_HOME", str(REPO / ".cache" / "kafka-test"))
os.environ.setdefault("FLEET_KAFKA_PORT", "19092")
os.environ.setdefault("FLEET_KAFKA_CONTROLLER_PORT", "19093")
os.environ.setdefault("FLEET_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{os.environ['FLEET_KAFKA_PORT']}")

# Set before any test builds settings: services, the CLI in subprocesses and the helpers all read FLEET_KEYS_DIR.
KEYS_DIR = Path(tempfile.mkdtemp(prefix="eventfleet-test-keys-"))
os.environ["FLEET_KEYS_DIR"] = str(KEYS_DIR)
os.environ["FLEET_KEYS_RELOAD_EVERY_S"] = "0.5"
init_keys(KEYS_DIR, [*WORKERS, *UPSTREAM_SIGNERS])

# Each worker's store and files in a throwaway folder of this run, never the ones `make run` uses; the workers are the
# registry of services' (fleet.catalog), so a new one gets its own too.
STATE_DIR = Path(tempfile.mkdtemp(prefix="eventfleet-test-state-"))
for _service in WORKERS:
    os.environ.setdefault(f"{_service.upper()}_STORE_URL", f"sqlite:///{STATE_DIR / _service}.db")
    os.environ.setdefault(f"{_service.upper()}_HTTP_PORT", "0")  # a free port each: never the ones `make run` uses
os.environ.setdefault("NOTIFICATIONS_OUTBOX_PATH", str(STATE_DIR / "notifications.jsonl"))
os.environ.setdefault("GATEWAY_TRACKER_STORE_URL", os.environ["TRACKER_STORE_URL"])


@pytest.fixture(scope="session")
def keys_dir() -> Path:
    return KEYS_DIR
