"""The real broker for integration tests: started if it is not up, and a failure (never a skip) if it cannot start."""

import asyncio
import uuid

import psycopg
import pytest

from fleet import kafka_local, postgres_local
from fleet.groups import group_members
from fleet.topics import apply_topics
from services import SERVICES


@pytest.fixture(scope="session")
def kafka() -> str:
    try:
        kafka_local.start()
    except Exception as error:  # any reason at all: the run fails, loudly
        pytest.fail(f"the local Kafka broker could not start, so the integration tests cannot run: {error}", pytrace=False)
    bootstrap = kafka_local.bootstrap_servers()
    asyncio.run(apply_topics(bootstrap))
    busy = {group: n for group, n in asyncio.run(group_members(bootstrap, list(SERVICES))).items() if n}
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
