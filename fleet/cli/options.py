"""What several `fleet` commands share: the --bootstrap option, the local fleet's state folder and the keys folder."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["STATE_DIR", "BootstrapOption", "keys_dir"]

STATE_DIR = Path(".fleet")  # the local fleet's state file, logs and control requests, in the working directory

BootstrapOption = typer.Option(
    None, "--bootstrap", help="host:port of the brokers (default: FLEET_KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)."
)


def keys_dir() -> Path:
    """FLEET_KEYS_DIR, default .fleet/keys."""
    from fleet.runtime.settings import KeySettings

    return KeySettings().dir
