"""Runs a local three-node Apache Kafka cluster on loopback, for failover tests.

KRaft: each node is both broker and controller."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from fleet.local import kafka as kafka_local
from fleet.local.kafka import HOST, JVM_OPTS, KafkaLocalError

__all__ = [
    "KafkaClusterError",
    "NodeStatus",
    "bootstrap_servers",
    "brokers_seen",
    "client_ports",
    "home",
    "node_folder",
    "node_pid",
    "render_node_properties",
    "signal_node",
    "start",
    "start_node",
    "status",
    "stop",
    "stop_node",
    "template_setting",
    "voters",
]

NODES = (1, 2, 3)  # node.id; node N listens on the N-th client port
# Below Linux's ephemeral range (32768-60999): a port in it can be taken at any moment by an outgoing connection or by a
# server asking for port 0 (a worker's HTTP port), and the node then fails to bind it.
DEFAULT_PORTS = "9192,9292,9392"
TEMPLATE = kafka_local.TEMPLATES / "cluster.properties.template"


class KafkaClusterError(KafkaLocalError):
    """The local cluster could not be set up, started or stopped."""


@dataclass(frozen=True)
class NodeStatus:
    node: int
    port: int
    pid: int | None  # our node's process; None when it does not run
    brokers: tuple[int, ...] | None  # the live brokers this node's metadata lists; None when it does not answer

    @property
    def ready(self) -> bool:
        return self.brokers is not None and set(self.brokers) == set(NODES)


# ---- configuration (pure) -------------------------------------------------------------------------------------------


def home() -> Path:
    """The cluster's folder: jars in lib/, then node-N/ with each node's config, data, pid file and log."""
    custom = os.environ.get("FLEET_KAFKA_CLUSTER_HOME")
    return Path(custom).resolve() if custom else Path.cwd() / ".cache" / "kafka-cluster"


def client_ports(spec: str | None = None) -> list[int]:
    """The three client ports (FLEET_KAFKA_CLUSTER_PORTS); each node's controller listens on its client port + 1."""
    text = os.environ.get("FLEET_KAFKA_CLUSTER_PORTS", DEFAULT_PORTS) if spec is None else spec
    try:
        ports = [int(part) for part in text.split(",")]
    except ValueError:
        raise KafkaClusterError(
            f"FLEET_KAFKA_CLUSTER_PORTS must be three comma-separated port numbers, not {text!r}"
        ) from None
    if len(ports) != len(NODES):
        raise KafkaClusterError(f"FLEET_KAFKA_CLUSTER_PORTS needs {len(NODES)} client ports, one per node: {text!r}")
    if any(not 1 <= p <= 65534 for p in ports):
        raise KafkaClusterError(f"client ports must be within 1..65534 (the controller takes port + 1): {text!r}")
    taken = [p for port in ports for p in (port, controller_port(port))]
    if len(set(taken)) != len(taken):
        raise KafkaClusterError(f"client ports and their controller ports (+1) must all differ: {text!r} takes {taken}")
    return ports


def controller_port(client_port: int) -> int:
    return client_port + 1


def bootstrap_servers(ports: list[int] | None = None) -> str:
    return ",".join(f"{HOST}:{p}" for p in (ports or client_ports()))


def voters(ports: list[int]) -> str:
    """controller.quorum.voters: the same static quorum in every node's config."""
    return ",".join(f"{node}@{HOST}:{controller_port(p)}" for node, p in zip(NODES, ports, strict=True))


def node_folder(node: int, folder: Path | None = None) -> Path:
    return (folder or home()) / f"node-{node}"


def log_path(node: int, folder: Path | None = None) -> Path:
    return node_folder(node, folder) / "logs" / "server.log"


def template_setting(name: str) -> str:
    """A setting that every node gets from the template as is (broker.session.timeout.ms, for instance)."""
    for line in TEMPLATE.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name and not line.lstrip().startswith("#"):
            return value.strip()
    raise KafkaClusterError(f"{TEMPLATE.name} does not set {name}")


def render_node_properties(node: int, folder: Path, ports: list[int]) -> str:
    if node not in NODES:
        raise KafkaClusterError(f"no node {node}: the cluster has nodes {NODES}")
    port = ports[node - 1]
    return TEMPLATE.read_text().format(
        host=HOST,
        node_id=node,
        port=port,
        controller_port=controller_port(port),
        voters=voters(ports),
        data=node_folder(node, folder) / "data",
    )


# ---- the whole cluster -----------------------------------------------------------------------------------------------


def start(timeout: float = 180.0) -> str:
    """Start every node that does not run; return once each answers, lists all three brokers,
    and groups can be coordinated."""
    folder, ports = home(), client_ports()
    pids = {node: node_pid(node) for node in NODES}
    if all(pids.values()) and _cluster_ready(ports):
        return f"The Kafka cluster is already running on {bootstrap_servers(ports)} (pids {_pids_text(pids)})."
    _check_free([port for node, pid in pids.items() if pid is None for port in _node_ports(node, ports)])
    java = _prepare(folder, ports)
    # All at once: a node cannot register before a majority of the voters elected a controller.
    running = {node: pid or _launch(java, folder, node) for node, pid in pids.items()}
    took = _wait_until(lambda: _cluster_ready(ports), running, timeout, f"the cluster on {bootstrap_servers(ports)}")
    return (
        f"The Kafka cluster is ready on {bootstrap_servers(ports)} after {took:.1f}s "
        f"(pids {_pids_text(running)}, logs in {folder}/node-N/logs)."
    )


def stop(timeout: float = 60.0) -> str:
    """Stop every node of ours: SIGTERM to all at once, SIGKILL to whatever still runs after `timeout` seconds."""
    pids = {node: pid for node in NODES if (pid := node_pid(node))}
    for node in NODES:
        if node not in pids:
            (node_folder(node) / "kafka.pid").unlink(missing_ok=True)
    if not pids:
        return "The Kafka cluster is not running."
    began = time.monotonic()
    for pid in pids.values():
        _terminate(pid)
    killed = [node for node, pid in pids.items() if not _end(pid, timeout, began)]
    for node in pids:
        (node_folder(node) / "kafka.pid").unlink(missing_ok=True)
    how = f", SIGKILLed node(s) {killed} after ignoring SIGTERM for {timeout:g}s" if killed else ""
    return f"The Kafka cluster (pids {_pids_text(pids)}) stopped in {time.monotonic() - began:.1f}s{how}."


def status() -> list[NodeStatus]:
    ports = client_ports()
    seen = _run_async(_all_brokers_seen(ports, 3.0))
    return [NodeStatus(node, ports[node - 1], node_pid(node), seen[node - 1]) for node in NODES]


def tail(node: int, lines: int = 200) -> str:
    path = log_path(node)
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# ---- one node (what failover tests strike) --------------------------------------------------------------------------


def node_pid(node: int) -> int | None:
    """The pid in node-N/kafka.pid if that process is alive and is that node of ours (a pid can be recycled)."""
    return kafka_local._running_pid(node_folder(node))


def signal_node(node: int, signum: int) -> int:
    """Send `signum` (SIGKILL, SIGSTOP, SIGCONT...) to our node; returns its pid. Never signals another process."""
    pid = node_pid(node)
    if pid is None:
        raise KafkaClusterError(f"node {node} of {home()} does not run")
    os.kill(pid, signum)
    return pid


def start_node(node: int, timeout: float = 180.0) -> str:
    """Start one node again (on its data); return once it answers and the cluster lists it as a live broker again."""
    folder, ports = home(), client_ports()
    pid = node_pid(node)
    if pid is None:
        _check_free(_node_ports(node, ports))
        pid = _launch(_prepare(folder, ports), folder, node)
    took = _wait_until(lambda: _node_ready(node, ports), {node: pid}, timeout, f"node {node} on port {ports[node - 1]}")
    return f"Kafka node {node} is ready on {HOST}:{ports[node - 1]} after {took:.1f}s (pid {pid})."


def stop_node(node: int, timeout: float = 60.0) -> str:
    """Stop one node: SIGTERM (a controlled shutdown moves its leaderships first), SIGKILL after `timeout` seconds."""
    pid = node_pid(node)
    if pid is None:
        (node_folder(node) / "kafka.pid").unlink(missing_ok=True)  # stale, if any
        return f"Kafka node {node} is not running."
    began = time.monotonic()
    _terminate(pid)
    how = "stopped" if _end(pid, timeout, began) else f"killed after ignoring SIGTERM for {timeout:g}s"
    (node_folder(node) / "kafka.pid").unlink(missing_ok=True)
    return f"Kafka node {node} (pid {pid}) {how} in {time.monotonic() - began:.1f}s."


# ---- setting up and launching ----------------------------------------------------------------------------------------


def _prepare(folder: Path, ports: list[int]) -> str:
    """Jars, configs and formatted storage for every node; returns the java to launch them with."""
    java = kafka_local._require("java", "Install Java 17 or newer (apt-get install openjdk-17-jre-headless).")
    kafka_local._ensure_jars(folder)  # into <home>/lib, shared by the three nodes
    shutil.copyfile(kafka_local.TEMPLATES / "log4j2.properties", folder / "log4j2.properties")
    for node in NODES:
        (node_folder(node, folder) / "data").mkdir(parents=True, exist_ok=True)
        (node_folder(node, folder) / "server.properties").write_text(render_node_properties(node, folder, ports))
    _format_storage(java, folder)
    return java


def _format_storage(java: str, folder: Path) -> None:
    """Formats the nodes that have no data yet, all with the cluster's one id."""
    blank = [node for node in NODES if not _meta_file(node, folder).exists()]
    if not blank:
        return
    tool = [java, *JVM_OPTS, "-cp", str(folder / "lib" / "*"), "kafka.tools.StorageTool"]
    cluster_id = _cluster_id(tool, folder, blank)
    print(f"Formatting the KRaft storage of node(s) {blank} in {folder} (cluster id {cluster_id})...", file=sys.stderr)
    # No --standalone: the quorum is the static controller.quorum.voters. In parallel: each run is a JVM start.
    commands = [
        [*tool, "format", "-t", cluster_id, "-c", str(node_folder(node, folder) / "server.properties")]
        for node in blank
    ]
    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        list(pool.map(lambda cmd: kafka_local._run(cmd, "Kafka could not format a node's storage"), commands))


def _cluster_id(tool: list[str], folder: Path, blank: list[int]) -> str:
    """The id the formatted nodes carry (a node whose data was lost rejoins its cluster), else a new one."""
    for node in NODES:
        if node not in blank:
            for line in _meta_file(node, folder).read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
    out = kafka_local._run([*tool, "random-uuid"], "Kafka could not make a cluster id").split()
    if not out or not kafka_local.CLUSTER_ID.fullmatch(out[-1]):
        raise KafkaClusterError(f"StorageTool random-uuid printed no cluster id: {out!r}")
    return out[-1]


def _meta_file(node: int, folder: Path) -> Path:
    return node_folder(node, folder) / "data" / "meta.properties"


def _launch(java: str, folder: Path, node: int) -> int:
    here = node_folder(node, folder)
    return kafka_local.spawn_kafka(
        java,
        folder,
        here / "server.properties",
        log_path(node, folder),
        f"fleet.local.kafka_cluster starts node {node}",
    )


def _node_ports(node: int, ports: list[int]) -> list[int]:
    return [ports[node - 1], controller_port(ports[node - 1])]


def _check_free(ports: list[int]) -> None:
    """A port another process holds would make the node exit at start with a BindException deep in its log:
    say so first."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(
                socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
            )  # as Kafka binds: TIME_WAIT leftovers do not count
            try:
                probe.bind((HOST, port))
            except OSError as error:
                raise KafkaClusterError(
                    f"{HOST}:{port} is taken by another process ({error.strerror}); "
                    "FLEET_KAFKA_CLUSTER_PORTS moves the cluster"
                ) from None


def _wait_until(ready, pids: dict[int, int], timeout: float, what: str) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        for node, pid in pids.items():
            if not kafka_local._alive(pid):
                (node_folder(node) / "kafka.pid").unlink(missing_ok=True)
                raise KafkaClusterError(
                    f"Kafka node {node} (pid {pid}) exited while starting. End of {log_path(node)}:\n{tail(node, 30)}"
                )
        if ready():
            return time.monotonic() - began
        time.sleep(0.5)
    ends = "\n".join(f"--- node {node}, {log_path(node)}:\n{tail(node, 15)}" for node in pids)
    raise KafkaClusterError(
        f"{what} was not ready within {timeout:g}s and still runs "
        f"(`python -m fleet.local.kafka_cluster stop` stops it).\n{ends}"
    )


def _terminate(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    # A node a chaos run paused (SIGSTOP) would hold the SIGTERM until the SIGKILL: let it go on to shut down.
    os.kill(pid, signal.SIGCONT)


def _end(pid: int, timeout: float, began: float) -> bool:
    """Waits for `pid` to exit until `timeout` after `began`; SIGKILLs it then. True when it exited by itself."""
    if kafka_local._wait_for_exit(pid, max(0.0, timeout - (time.monotonic() - began))):
        return True
    if kafka_local._alive(pid):
        os.kill(pid, signal.SIGKILL)
        kafka_local._wait_for_exit(pid, 10.0)
    return False


def _pids_text(pids: Mapping[int, int | None]) -> str:
    return ", ".join(f"node {node}: {pid}" for node, pid in sorted(pids.items()))


# ---- readiness: metadata answers, not open ports ---------------------------------------------------------------------


def _cluster_ready(ports: list[int]) -> bool:
    seen = _run_async(_all_brokers_seen(ports, 3.0))
    # A freshly formatted cluster answers metadata before it can coordinate groups (the offsets topic is created on the
    # first FindCoordinator, with three replicas): ready means consumers can join a group too.
    return all(s is not None and set(s) == set(NODES) for s in seen) and _run_async(_coordinator_found(ports, 10.0))


def _node_ready(node: int, ports: list[int]) -> bool:
    seen = _run_async(_all_brokers_seen(ports, 3.0))
    return seen[node - 1] is not None and all(node in s for s in seen if s is not None)


def _run_async(coroutine):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Called from async code: asyncio.run needs a thread without a running loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _all_brokers_seen(ports: list[int], timeout: float) -> list[tuple[int, ...] | None]:
    return list(await asyncio.gather(*(brokers_seen(port, timeout) for port in ports)))


async def brokers_seen(port: int, timeout: float = 3.0) -> tuple[int, ...] | None:
    """The live (unfenced) brokers that the node on `port` lists in a metadata answer; None when it does not answer."""
    try:  # a closed port fails at once: the client (and its error logs) is not needed then
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        writer.close()
    except (TimeoutError, OSError):
        return None
    async with _quiet_client(f"{HOST}:{port}", timeout) as client:
        try:
            # bootstrap() asks this node alone; a paused node accepts the connection but never answers.
            await asyncio.wait_for(client.bootstrap(), timeout)
        except Exception:
            return None
        return tuple(sorted(broker.nodeId for broker in client.cluster.brokers()))


async def _coordinator_found(ports: list[int], timeout: float) -> bool:
    async with _quiet_client(bootstrap_servers(ports), timeout) as client:
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            await asyncio.wait_for(client.coordinator_lookup(0, "eventfleet-ready-probe"), timeout)
            return True
        except Exception:
            return False


class _quiet_client:
    """An AIOKafkaClient whose connection errors are not logged: a node still starting is expected, not an error."""

    def __init__(self, bootstrap: str, timeout: float) -> None:
        from aiokafka import AIOKafkaClient  # imported late: the CLI and the unit tests start faster

        self._client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
        self._log = logging.getLogger("aiokafka")

    async def __aenter__(self):
        self._level = self._log.level
        self._log.setLevel(logging.CRITICAL)
        return self._client

    async def __aexit__(self, *exc_info) -> None:
        try:
            await self._client.close()
        finally:
            self._log.setLevel(self._level)


# ---- command line ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.local.kafka_cluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text, timeout in (
        ("start", "start the cluster (or --node N); returns when it answers", 180.0),
        ("stop", "stop the cluster (or --node N)", 60.0),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--timeout", type=float, default=timeout)
        command.add_argument("--node", type=int, choices=NODES, help="only this node")
    commands.add_parser(
        "status", help="each node's pid and the brokers it lists; exit status 1 unless all three are ready"
    )
    logs = commands.add_parser("logs", help="the end of each node's log (or --node N's)")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("--node", type=int, choices=NODES)
    args = parser.parse_args(argv)
    try:
        return _command(args)
    except KafkaLocalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    if args.command == "status":
        nodes = status()
        for n in nodes:
            print(
                f"node={n.node} port={n.port} pid={n.pid} brokers={list(n.brokers) if n.brokers is not None else None} "
                f"ready={n.ready}"
            )
        print(f"bootstrap={bootstrap_servers()} home={home()}")
        return 0 if all(n.ready for n in nodes) else 1
    if args.command == "logs":
        for node in [args.node] if args.node else NODES:
            print(f"===== node {node}: {log_path(node)}\n{tail(node, args.lines) or '(no log yet)'}")
        return 0
    if args.command == "start":
        print(start_node(args.node, args.timeout) if args.node else start(args.timeout))
    else:
        print(stop_node(args.node, args.timeout) if args.node else stop(args.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
