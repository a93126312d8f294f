"""The local Kafka launcher's pure parts: rendered configs, folders, pid handling; no broker, no network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.local import kafka as kafka_local
from tests.support import properties


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder, default ports, and no broker answering (never the real one)."""
    monkeypatch.setenv("FLEET_KAFKA_HOME", str(tmp_path))
    monkeypatch.delenv("FLEET_KAFKA_PORT", raising=False)
    monkeypatch.delenv("FLEET_KAFKA_CONTROLLER_PORT", raising=False)
    monkeypatch.setattr(kafka_local, "_answers", lambda timeout=3.0: False)
    return tmp_path


@pytest.fixture
def server(home: Path) -> dict[str, str]:
    return properties(kafka_local.render_server_properties(home))


FAKE_PROCESS = """
import signal, sys, time
if sys.argv[1] == "ignore-sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def spawn(home: Path):
    """Starts a sleeping Python process with the given arguments and writes its pid to kafka.pid."""
    started: list[subprocess.Popen] = []

    def _spawn(*args: str, ignore_sigterm: bool = False) -> subprocess.Popen:
        mode = "ignore-sigterm" if ignore_sigterm else "default"
        proc = subprocess.Popen([sys.executable, "-c", FAKE_PROCESS, mode, *args], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready"  # its signal handler is in place
        (home / "kafka.pid").write_text(f"{proc.pid}\n")
        return proc

    yield _spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def like_our_broker(home: Path) -> tuple[str, str]:
    return "kafka.Kafka", str(home / "server.properties")


def test_server_properties_disable_topic_auto_creation(server):
    assert server["auto.create.topics.enable"] == "false"


def test_server_properties_make_one_node_both_broker_and_controller(server):
    assert server["process.roles"] == "broker,controller"
    assert server["node.id"] == "1"
    assert server["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert server["controller.listener.names"] == "CONTROLLER"
    assert server["inter.broker.listener.name"] == "PLAINTEXT"
    assert server["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"


def test_server_properties_listen_and_advertise_on_loopback_only(server):
    assert server["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert server["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"


def test_server_properties_keep_every_topic_at_one_replica(server):
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "share.coordinator.state.topic.min.isr", "default.replication.factor", "min.insync.replicas"):
        assert server[key] == "1", key


def test_server_properties_let_consumer_groups_start_without_delay(server):
    assert server["group.initial.rebalance.delay.ms"] == "0"


def test_server_properties_keep_the_data_in_the_home_folder(server, home):
    assert server["log.dirs"] == str(home / "data")


def test_server_properties_leave_no_placeholder_unfilled(home):
    assert "{" not in kafka_local.render_server_properties(home)


def test_ports_follow_the_environment(home, monkeypatch):
    monkeypatch.setenv("FLEET_KAFKA_PORT", "19092")
    monkeypatch.setenv("FLEET_KAFKA_CONTROLLER_PORT", "19093")
    server = properties(kafka_local.render_server_properties(home))
    assert kafka_local.bootstrap_servers() == "127.0.0.1:19092"
    assert server["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert server["controller.quorum.voters"] == "1@127.0.0.1:19093"


def test_home_is_the_cache_folder_of_the_working_directory_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv("FLEET_KAFKA_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert kafka_local.home() == tmp_path / ".cache" / "kafka"


def test_home_follows_the_environment(home):
    assert kafka_local.home() == home
    assert kafka_local.log_path() == home / "logs" / "server.log"


def test_log_config_sends_info_to_the_console_and_survives_the_broker_shutdown():
    log4j2 = properties((kafka_local.TEMPLATES / "log4j2.properties").read_text())
    assert log4j2["appender.stdout.type"] == "Console"
    assert log4j2["rootLogger.level"] == "INFO"
    assert log4j2["shutdownHook"] == "disable"


def test_stop_never_signals_a_process_that_is_not_our_broker(home, spawn):
    stranger = spawn("some", "other", "program")
    message = kafka_local.stop(timeout=1)
    assert stranger.poll() is None
    assert "not running" in message and "stale pid file" in message
    assert not (home / "kafka.pid").exists()


def test_stop_never_signals_the_broker_of_another_home_folder(home, spawn, tmp_path_factory):
    other = spawn("kafka.Kafka", str(tmp_path_factory.mktemp("other") / "server.properties"))
    kafka_local.stop(timeout=1)
    assert other.poll() is None


def test_stop_says_so_when_nothing_runs(home):
    assert kafka_local.stop() == "Kafka is not running."


def test_stop_terminates_our_broker_and_removes_the_pid_file(home, spawn):
    broker = spawn(*like_our_broker(home))
    message = kafka_local.stop(timeout=5)
    assert f"pid {broker.pid}) stopped" in message
    assert broker.wait(timeout=5) is not None
    assert not (home / "kafka.pid").exists()


def test_stop_kills_a_broker_that_ignores_sigterm_after_the_timeout(home, spawn):
    broker = spawn(*like_our_broker(home), ignore_sigterm=True)
    message = kafka_local.stop(timeout=0.5)
    assert "killed" in message
    broker.wait(timeout=5)
    assert not kafka_local._alive(broker.pid)


def test_status_tells_our_broker_from_a_recycled_pid(home, spawn):
    spawn("unrelated")
    assert kafka_local.status() == kafka_local.KafkaStatus(pid=None, ready=False, bootstrap="127.0.0.1:9092")
    broker = spawn(*like_our_broker(home))
    assert kafka_local.status().pid == broker.pid


def test_start_reports_a_broker_that_already_answers_without_launching_one(home, monkeypatch):
    monkeypatch.setattr(kafka_local, "_answers", lambda timeout=3.0: True)
    monkeypatch.setattr(kafka_local, "_launch", lambda *args: pytest.fail("launched a second broker"))
    assert "already running" in kafka_local.start()


def test_start_explains_that_java_is_missing(home, monkeypatch):
    monkeypatch.setattr(kafka_local.shutil, "which", lambda tool: None)
    with pytest.raises(kafka_local.KafkaLocalError, match="`java` is not on PATH"):
        kafka_local.start()


def test_jars_are_fetched_with_the_project_pom_only_when_the_kafka_jar_is_missing(home, monkeypatch):
    calls = []

    def fake_mvn(cmd, failure):
        calls.append(cmd)
        out = Path(next(arg for arg in cmd if arg.startswith("-DoutputDirectory=")).split("=", 1)[1])
        out.mkdir(parents=True)
        (out / "kafka_2.13-4.3.1.jar").touch()
        return ""

    monkeypatch.setattr(kafka_local, "_require", lambda tool, hint: tool)
    monkeypatch.setattr(kafka_local, "_run", fake_mvn)
    kafka_local._ensure_jars(home)
    kafka_local._ensure_jars(home)
    assert len(calls) == 1
    assert str(kafka_local.POM) in calls[0] and "dependency:copy-dependencies" in calls[0]
    assert (home / "lib" / "kafka_2.13-4.3.1.jar").exists()


def test_storage_is_formatted_only_once(home, monkeypatch):
    (home / "data").mkdir()
    (home / "data" / "meta.properties").write_text("cluster.id=x\n")
    monkeypatch.setattr(kafka_local, "_run", lambda cmd, failure: pytest.fail("formatted again"))
    kafka_local._format_storage("java", home)


def test_formatting_takes_the_cluster_id_from_the_last_line_of_the_tool_output(home, monkeypatch):
    calls = []

    def fake_tool(cmd, failure):
        calls.append(cmd)
        return "[2026-01-01 00:00:00] INFO a stray log line (x)\nmMZCcfz_Twe1F0_1xVU0Rw\n"

    monkeypatch.setattr(kafka_local, "_run", fake_tool)
    kafka_local._format_storage("java", home)
    assert (home / "cluster.id").read_text() == "mMZCcfz_Twe1F0_1xVU0Rw\n"
    assert calls[1][-5:] == ["format", "-t", "mMZCcfz_Twe1F0_1xVU0Rw", "-c", str(home / "server.properties")]


def test_formatting_refuses_tool_output_that_is_no_cluster_id(home, monkeypatch):
    monkeypatch.setattr(kafka_local, "_run", lambda cmd, failure: "Exception in thread main\n")
    with pytest.raises(kafka_local.KafkaLocalError, match="no cluster id"):
        kafka_local._format_storage("java", home)


def test_logs_print_the_end_of_the_log(home, capsys):
    kafka_local.log_path().parent.mkdir()
    kafka_local.log_path().write_text("".join(f"line {n}\n" for n in range(500)))
    kafka_local.logs(lines=2)
    assert capsys.readouterr().out == "line 498\nline 499\n"


def test_logs_say_so_before_the_first_start(home, capsys):
    kafka_local.logs()
    assert "No log yet" in capsys.readouterr().out


def test_main_status_exits_with_1_when_no_broker_answers(home, capsys):
    assert kafka_local.main(["status"]) == 1
    assert "ready=False" in capsys.readouterr().out


@pytest.fixture
def free_port(monkeypatch) -> socket.socket:
    """A loopback port bound but never accepting: open, yet no broker behind it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    monkeypatch.setenv("FLEET_KAFKA_PORT", str(sock.getsockname()[1]))
    yield sock
    sock.close()


def test_a_closed_port_is_not_a_ready_broker(free_port):
    assert kafka_local._answers(timeout=0.5) is False


def test_an_open_port_that_answers_nothing_is_not_a_ready_broker(free_port):
    free_port.listen()
    assert kafka_local._answers(timeout=0.5) is False


async def test_readiness_can_be_checked_from_async_code(free_port):
    assert kafka_local._answers(timeout=0.5) is False


def test_the_module_runs_as_a_script(home):
    env = {**os.environ, "PYTHONPATH": str(Path(kafka_local.__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-m", "fleet.local.kafka", "--help"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "start" in done.stdout
