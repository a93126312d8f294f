"""The real broker for integration tests: started if it is not up, and a failure (never a skip) if it cannot start."""

import asyncio
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from contracts.connection import KafkaConnection
from fleet.local import kafka as kafka_local
from fleet.local import postgres as postgres_local
from fleet.ops.acls import apply_acls, fleet_acls, fleet_users
from fleet.docs.governance import service_wiring
from fleet.ops.groups import group_members
from fleet.runtime.settings import KafkaSettings
from fleet.ops.topics import apply_topics
from fleet.catalog import WORKERS

REPO = Path(__file__).resolve().parents[2]
SECURE_PORT = 19292  # and 19293 for its controller: beside the plain test broker's 19092


@pytest.fixture(scope="session")
def kafka() -> str:
    try:
        kafka_local.start()
    except Exception as error:  # any reason at all: the run fails, loudly
        pytest.fail(f"the local Kafka broker could not start, so the integration tests cannot run: {error}", pytrace=False)
    bootstrap = kafka_local.bootstrap_servers()
    asyncio.run(apply_topics(bootstrap))
    busy = {group: n for group, n in asyncio.run(group_members(bootstrap, list(WORKERS))).items() if n}
    if busy:
        # Their workers would also handle the tests' orders, and the exactly-once checks would see their outcomes too.
        pytest.fail(f"a local fleet is running on this broker (groups with members: {busy}); stop `make run` first", pytrace=False)
    return bootstrap


@pytest.fixture
def group_id(request) -> str:
    """A consumer group of this test's own, so tests never share offsets with each other or with `make run`."""
    return f"it-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def postgres() -> str:
    """The local PostgreSQL cluster's DSN: started if it is not up, and a failure (never a skip) if it cannot start."""
    try:
        postgres_local.start()
    except Exception as error:  # any reason at all: the run fails, loudly
        pytest.fail(f"the local PostgreSQL cluster could not start, so the store tests on it cannot run: {error}", pytrace=False)
    return postgres_local.dsn()


@pytest.fixture
def postgres_url(postgres) -> str:
    """A schema of this test's own in the cluster's database (dropped afterwards), and a URL whose connections use it:
    no outbox rows of another test, or of another run on the same cluster, are ever relayed by this test's workers.

    Synchronous, so the parametrized `store` fixture can ask for it only on its PostgreSQL run.
    """
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    yield f"{postgres}?options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")


@dataclass(frozen=True)
class SecureBroker:
    """The secure test broker (TLS, SCRAM-SHA-512, ACLs from `fleet acl apply`): how each of the fleet's users connects."""

    home: Path
    admin: KafkaConnection

    def password_of(self, user: str) -> str:
        return (self.home / "secure" / "credentials" / f"{user}.password").read_text().strip()

    def as_user(self, user: str) -> KafkaConnection:
        return self.admin.as_user(user, self.password_of(user))

    def launcher_env(self) -> dict[str, str]:
        return launcher_env(self.home, SECURE_PORT)

    def start_again(self) -> str:
        """What `make kafka-secure` says when this broker runs already: it adds the SCRAM users that have none yet."""
        with _local_broker_env(self.home, SECURE_PORT):
            return kafka_local.start(secure=True, users=fleet_users())

    def settings(self, **overrides) -> KafkaSettings:
        """A worker's Kafka settings as `fleet up` gives them: it logs in as its service, its password from the folder."""
        secure = self.home / "secure"
        return KafkaSettings(bootstrap_servers=self.admin.bootstrap_servers, security_protocol="SASL_SSL",
                             ssl_cafile=secure / "ca.pem", credentials_dir=secure / "credentials", **overrides)


def launcher_env(home: Path, port: int) -> dict[str, str]:
    """The variables that point fleet.local.kafka (and `fleet up`) at the broker in `home`."""
    return {"FLEET_KAFKA_HOME": str(home), "FLEET_KAFKA_PORT": str(port), "FLEET_KAFKA_CONTROLLER_PORT": str(port + 1)}


@contextmanager
def _local_broker_env(home: Path, port: int):
    """kafka_local reads where its broker lives from the environment: point it at another broker for a while."""
    wanted = launcher_env(home, port)
    before = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in before.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture(scope="session")
def secure_kafka() -> SecureBroker:
    """A fresh secure broker for this run (127.0.0.1:19292, data in .cache/kafka-secure-test), with the registry's topics
    and exactly the ACLs `fleet acl plan` derives; stopped after the run. A failure, never a skip, if it cannot start."""
    home = REPO / ".cache" / "kafka-secure-test"
    with _local_broker_env(home, SECURE_PORT):
        try:
            kafka_local.stop()
            shutil.rmtree(home / "data", ignore_errors=True)  # no groups, offsets or ACLs of an earlier run
            kafka_local.start(secure=True, users=fleet_users())
            admin = kafka_local.connection()
        except Exception as error:  # any reason at all: the run fails, loudly
            pytest.fail(f"the secure Kafka broker could not start, so its tests cannot run: {error}", pytrace=False)
    asyncio.run(apply_topics(admin))
    asyncio.run(apply_acls(admin, fleet_acls(service_wiring()), fleet_users()))
    yield SecureBroker(home, admin)
    with _local_broker_env(home, SECURE_PORT):
        kafka_local.stop()
