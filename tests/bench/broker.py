"""The bench's own broker (127.0.0.1:29492, data in .cache/kafka-bench, fresh every run), its topics, the prefill, and Kafka's tools."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts import encode, source_of
from fleet.local import kafka as kafka_local
from fleet.runtime.keys import KeyStore, init_keys
from fleet.ops.topics import apply_topics

from tests.support.kafka import topics_have_leaders
from tests.support.waiting import eventually

from .contract import ALGORITHMS, RELAY, SOURCE, BenchOrderReceived, bench_registry
from .events import event_key, event_value

REPO = Path(__file__).resolve().parents[2]
# Below the ephemeral range (tests/chaos/harness.py says why): a probe retrying during start cannot take the port.
PORT = int(os.environ.get("FLEET_BENCH_KAFKA_PORT", 29492))
CONTROLLER_PORT = int(os.environ.get("FLEET_BENCH_CONTROLLER_PORT", PORT + 1))
BOOTSTRAP = f"127.0.0.1:{PORT}"
TOPICS = ("bench.in", "bench.out")
PARTITIONS = 6
TOOLS_POM = REPO / "deploy" / "local" / "kafka-tools" / "pom.xml"
TOOLS_LIB = REPO / ".cache" / "kafka-tools" / "lib"
KAFKA_POM = REPO / "deploy" / "local" / "kafka" / "pom.xml"


def configure_environment() -> None:
    """fleet.local.kafka reads these: every start, stop and probe of this process is the bench broker's."""
    os.environ.update({
        "FLEET_KAFKA_HOME": str(REPO / ".cache" / "kafka-bench"),
        "FLEET_KAFKA_PORT": str(PORT),
        "FLEET_KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT),
        "FLEET_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
    })


def fresh_broker() -> str:
    """Stops an earlier bench broker, drops its data (formatted anew at start) and starts it."""
    configure_environment()
    kafka_local.stop()
    shutil.rmtree(kafka_local.home() / "data", ignore_errors=True)
    return kafka_local.start()


def stop_broker() -> str:
    configure_environment()
    return kafka_local.stop()


def kafka_version() -> str:
    """The broker's Kafka version, from the jar in its lib folder (the POM's version when not fetched yet)."""
    for jar in (kafka_local.home() / "lib").glob("kafka_2.13-*.jar"):
        return jar.stem.removeprefix("kafka_2.13-")
    return "unknown"


async def create_topics(names: tuple[str, ...] = TOPICS, partitions: int = PARTITIONS) -> None:
    """Creates the bench topics (the data is fresh, so they never exist yet) and waits until each has its leaders."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="bench-topics")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
        await eventually(lambda: topics_have_leaders(admin, names, partitions=partitions), f"topics {names} to have leaders",
                         timeout_s=30, every_s=0.2, error=RuntimeError)
    finally:
        await admin.close()


async def prefill(events: int, topic: str = "bench.in") -> float:
    """Writes `events` bench events to `topic` as fast as the client goes; returns the seconds it took."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    began = time.perf_counter()
    try:
        acks = [await producer.send(topic, event_value(seq), key=event_key(seq)) for seq in range(events)]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return time.perf_counter() - began


def keys_dir(work: Path, alg: str) -> Path:
    """The bench relay's keyring and its signers' keys for one algorithm (FLEET_KEYS_DIR of its processes)."""
    folder = work / f"keys-{alg}"
    init_keys(folder, [SOURCE, RELAY], registry=bench_registry(alg), alg=ALGORITHMS[alg])
    return folder


async def create_fleet_topics() -> None:
    """The bench relay's registry topics (input, retry tiers, dead letters, output) for every algorithm, as `fleet
    topics apply` makes them: 6 partitions, LogAppendTime."""
    for alg in ALGORITHMS:
        await apply_topics(BOOTSTRAP, registry=bench_registry(alg))


async def prefill_signed(events: int, alg: str, keys: Path) -> float:
    """Writes the same `events` bench events as `prefill`, each a signed fleet record from bench-source; returns the seconds."""
    registry = bench_registry(alg)
    signer = KeyStore.for_signer(keys, SOURCE).signer()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    began = time.perf_counter()
    try:
        acks = []
        for seq in range(events):
            record = encode(BenchOrderReceived.model_validate_json(event_value(seq)), source=source_of(SOURCE), signer=signer,
                            registry=registry)
            acks.append(await producer.send(record.topic, record.value, key=record.key.encode(), headers=record.raw_headers()))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return time.perf_counter() - began


def fleet_keys_dir(work: Path) -> Path:
    """The fleet's keyring and the keys of its workers and upstream signers, for the drain (FLEET_KEYS_DIR of payments)."""
    from fleet.catalog import WORKERS
    from fleet.runtime.keys import UPSTREAM_SIGNERS

    folder = work / "keys-fleet"
    init_keys(folder, [*WORKERS, *UPSTREAM_SIGNERS])
    return folder


async def create_registry_topics() -> None:
    """The fleet registry's topics (orders.placed.v1, ...), as `fleet topics apply` makes them, on the one broker."""
    from contracts import REGISTRY

    await apply_topics(BOOTSTRAP, replication_factor=1)
    names = [t.name for t in REGISTRY.topics]
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="bench-topics")
    await admin.start()
    try:
        await eventually(lambda: topics_have_leaders(admin, names), "the registry's topics to have leaders", timeout_s=30,
                         every_s=0.2, error=RuntimeError)
    finally:
        await admin.close()


async def prefill_orders(count: int, keys: Path) -> float:
    """Writes `count` orders that payments authorizes to their topic (the current order version), each signed by the storefront as the flow's
    sender signs them (tests.bench.flow); returns the seconds it took (signing included)."""
    from .flow import authorized_orders

    orders = authorized_orders(count, "drain")
    signer = KeyStore.for_signer(keys, "storefront").signer()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    began = time.perf_counter()
    try:
        acks = []
        for order in orders:
            record = encode(order, source=source_of("storefront"), signer=signer)
            acks.append(await producer.send(record.topic, record.value, key=record.key.encode(), headers=record.raw_headers()))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return time.perf_counter() - began


def ensure_tools() -> Path:
    """kafka-tools and its runtime jars in .cache/kafka-tools/lib, fetched by Maven once (like the broker's jars)."""
    if any(TOOLS_LIB.glob("kafka-tools-*.jar")):
        return TOOLS_LIB
    mvn = shutil.which("mvn")
    if not mvn:
        raise RuntimeError("`mvn` is not on PATH: it fetches Kafka's tools (apt-get install maven)")
    print(f"Fetching kafka-tools from Maven Central into {TOOLS_LIB} (first run only)...", file=sys.stderr, flush=True)
    partial = TOOLS_LIB.with_name("lib.partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run([mvn, "-B", "-q", "-f", str(TOOLS_POM), "dependency:copy-dependencies", "-DincludeScope=runtime",
                           f"-DoutputDirectory={partial}"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Maven could not fetch kafka-tools (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    shutil.rmtree(TOOLS_LIB, ignore_errors=True)
    partial.rename(TOOLS_LIB)
    return TOOLS_LIB
