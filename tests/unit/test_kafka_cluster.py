"""The three-node cluster launcher's pure parts: ports, voters, each node's rendered config; no broker, no network."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.local import kafka_cluster
from fleet.local.kafka_cluster import KafkaClusterError
from tests.support import properties


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cluster folder and the default ports (never the real cluster's)."""
    monkeypatch.setenv("FLEET_KAFKA_CLUSTER_HOME", str(tmp_path))
    monkeypatch.delenv("FLEET_KAFKA_CLUSTER_PORTS", raising=False)
    return tmp_path


@pytest.fixture
def nodes(home: Path) -> dict[int, dict[str, str]]:
    ports = kafka_cluster.client_ports()
    return {node: properties(kafka_cluster.render_node_properties(node, home, ports)) for node in kafka_cluster.NODES}


def test_default_ports_and_bootstrap_list_every_node(home):
    assert kafka_cluster.client_ports() == [9192, 9292, 9392]
    assert kafka_cluster.bootstrap_servers() == "127.0.0.1:9192,127.0.0.1:9292,127.0.0.1:9392"
    assert kafka_cluster.home() == home


def test_ports_come_from_the_environment(home, monkeypatch):
    monkeypatch.setenv("FLEET_KAFKA_CLUSTER_PORTS", "41000, 42000,43000")
    assert kafka_cluster.client_ports() == [41000, 42000, 43000]
    assert kafka_cluster.bootstrap_servers() == "127.0.0.1:41000,127.0.0.1:42000,127.0.0.1:43000"


@pytest.mark.parametrize("spec, complaint", [
    ("49192,49292", "needs 3 client ports"),
    ("49192,49292,49392,49492", "needs 3 client ports"),
    ("49192,x,49392", "three comma-separated port numbers"),
    ("", "three comma-separated port numbers"),
    ("49192,49292,65535", "within 1..65534"),
    ("0,49292,49392", "within 1..65534"),
    ("49192,49192,49392", "must all differ"),
    ("49192,49193,49392", "must all differ"),  # node 2's client port is node 1's controller port
])
def test_bad_port_lists_are_refused_with_a_reason(spec, complaint):
    with pytest.raises(KafkaClusterError, match=complaint):
        kafka_cluster.client_ports(spec)


def test_each_node_is_broker_and_controller_with_its_own_id_ports_and_folder(home, nodes):
    for node, config in nodes.items():
        port = 9092 + 100 * node
        assert config["process.roles"] == "broker,controller"
        assert config["node.id"] == str(node)
        assert config["listeners"] == f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}"
        assert config["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{port}"
        assert config["log.dirs"] == str(home / f"node-{node}" / "data")
    assert len({c["listeners"] for c in nodes.values()}) == 3
    assert len({c["log.dirs"] for c in nodes.values()}) == 3


def test_every_node_names_the_same_three_static_voters(nodes):
    voters = "1@127.0.0.1:9193,2@127.0.0.1:9293,3@127.0.0.1:9393"
    assert {c["controller.quorum.voters"] for c in nodes.values()} == {voters}
    assert all("controller.quorum.bootstrap.servers" not in c for c in nodes.values())


def test_topics_and_internal_topics_get_three_replicas_and_two_in_sync(nodes):
    for config in nodes.values():
        assert config["default.replication.factor"] == "3"
        assert config["min.insync.replicas"] == "2"
        assert config["offsets.topic.replication.factor"] == "3"
        assert config["transaction.state.log.replication.factor"] == "3"
        assert config["transaction.state.log.min.isr"] == "2"
        assert config["share.coordinator.state.topic.replication.factor"] == "3"
        assert config["share.coordinator.state.topic.min.isr"] == "2"
        assert config["unclean.leader.election.enable"] == "false"
        assert config["auto.create.topics.enable"] == "false"
        assert config["group.initial.rebalance.delay.ms"] == "0"


def test_a_silent_node_is_fenced_after_the_session_timeout_it_heartbeats_well_within(nodes):
    for config in nodes.values():
        assert int(config["broker.heartbeat.interval.ms"]) * 3 <= int(config["broker.session.timeout.ms"])
    assert kafka_cluster.template_setting("broker.session.timeout.ms") == nodes[1]["broker.session.timeout.ms"]
    with pytest.raises(KafkaClusterError, match="does not set"):
        kafka_cluster.template_setting("no.such.setting")


def test_a_node_whose_data_was_lost_is_formatted_with_the_id_the_others_carry(home):
    (home / "node-1" / "data").mkdir(parents=True)
    (home / "node-1" / "data" / "meta.properties").write_text("#\nnode.id=1\nversion=1\ncluster.id=5rIXy0Q0TpuW4QcAaoOAbQ\n")
    # No tool is run: an empty command would fail if it were.
    assert kafka_cluster._cluster_id([], home, blank=[2, 3]) == "5rIXy0Q0TpuW4QcAaoOAbQ"


def test_a_port_another_process_holds_is_named_before_any_node_starts(home):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(KafkaClusterError, match=f"127.0.0.1:{port} is taken by another process"):
            kafka_cluster._check_free([port])


def test_there_is_no_node_four(home):
    with pytest.raises(KafkaClusterError, match="no node 4"):
        kafka_cluster.render_node_properties(4, home, kafka_cluster.client_ports())


def test_a_process_that_is_not_our_node_is_never_signalled(home):
    """A recycled pid in node-1/kafka.pid: not `kafka.Kafka <home>/node-1/server.properties`, so left alone."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (home / "node-1").mkdir()
        (home / "node-1" / "kafka.pid").write_text(f"{stranger.pid}\n")
        assert kafka_cluster.node_pid(1) is None
        with pytest.raises(KafkaClusterError, match="does not run"):
            kafka_cluster.signal_node(1, signal.SIGKILL)
        assert stranger.poll() is None
        assert kafka_cluster.stop() == "The Kafka cluster is not running."
        assert stranger.poll() is None and not (home / "node-1" / "kafka.pid").exists()  # the stale pid file is gone
    finally:
        stranger.kill()
        stranger.wait()


def test_a_node_of_ours_is_found_by_its_command_line(home):
    """A stand-in whose command line names node 2's config, as `java ... kafka.Kafka <config>` would."""
    config = home / "node-2" / "server.properties"
    config.parent.mkdir()
    stand_in = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(60)", "kafka.Kafka", str(config)])
    try:
        (config.parent / "kafka.pid").write_text(f"{stand_in.pid}\n")
        assert kafka_cluster.node_pid(2) == stand_in.pid
        assert kafka_cluster.signal_node(2, signal.SIGSTOP) == stand_in.pid
        os.kill(stand_in.pid, signal.SIGCONT)
    finally:
        stand_in.kill()
        stand_in.wait()


def test_the_command_line_refuses_bad_ports_without_a_traceback(home, monkeypatch, capsys):
    monkeypatch.setenv("FLEET_KAFKA_CLUSTER_PORTS", "1,2")
    assert kafka_cluster.main(["status"]) == 1
    assert "needs 3 client ports" in capsys.readouterr().err
