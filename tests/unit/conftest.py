"""Unit tests never reach a broker: whatever a unit test builds from settings points at a port where nothing listens, so
a hidden dependency on the test broker fails here instead of passing only while that broker happens to run."""

import pytest

NO_BROKER = "127.0.0.1:9"  # the discard port: a connection is refused at once


@pytest.fixture(autouse=True)
def no_broker_for_unit_tests(monkeypatch):
    monkeypatch.setenv("FLEET_KAFKA_BOOTSTRAP_SERVERS", NO_BROKER)
