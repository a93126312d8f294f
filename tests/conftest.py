"""Session-wide test setup: a throwaway set of dev keys that every worker, subprocess and helper of the run uses."""

import os
import tempfile
from pathlib import Path

import pytest

from fleet.keys import UPSTREAM_SIGNERS, init_keys
from services import SERVICES

# Set before any test builds settings: services, the CLI in subprocesses and the helpers all read FLEET_KEYS_DIR.
KEYS_DIR = Path(tempfile.mkdtemp(prefix="eventfleet-test-keys-"))
os.environ["FLEET_KEYS_DIR"] = str(KEYS_DIR)
os.environ["FLEET_KEYS_RELOAD_EVERY_S"] = "0.5"
init_keys(KEYS_DIR, [*SERVICES, *UPSTREAM_SIGNERS])


@pytest.fixture(scope="session")
def keys_dir() -> Path:
    return KEYS_DIR
