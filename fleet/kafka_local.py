"""Runs a single-node Apache Kafka broker (KRaft) for local development, from jars off Maven Central."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
POM = REPO_ROOT / "deploy" / "local" / "kafka" / "pom.xml"
TEMPLATES = POM.parent  # beside the POM: server.properties.template, log4j2.properties
# Plenty for a dev broker on 2 cores; a bigger heap only slows the JVM start.
JVM_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
CLUSTER_ID = re.compile(r"[A-Za-z0-9_-]{22}")  # a Kafka Uuid: 16 bytes in unpadded base64url


class KafkaLocalError(RuntimeError):
    """The local broker could not be set up, started or stopped."""


@dataclass(frozen=True)
class KafkaStatus:
    pid: int | None  # our broker's process; None when it does not run
    ready: bool  # a broker answers a metadata request on `bootstrap`
    bootstrap: str


def home() -> Path:
    """The cache folder: jars, data, configs, pid file and log."""
    custom = os.environ.get("FLEET_KAFKA_HOME")
    return Path(custom).resolve() if custom else REPO_ROOT / ".cache" / "kafka"


def port() -> int:
    return int(os.environ.get("FLEET_KAFKA_PORT", "9092"))


def controller_port() -> int:
    return int(os.environ.get("FLEET_KAFKA_CONTROLLER_PORT", "9093"))


def bootstrap_servers() -> str:
    return f"{HOST}:{port()}"


def log_path() -> Path:
    return home() / "logs" / "server.log"


def render_server_properties(folder: Path) -> str:
    template = (TEMPLATES / "server.properties.template").read_text()
    return template.format(host=HOST, port=port(), controller_port=controller_port(), data=folder / "data")


def start(timeout: float = 90.0) -> str:
    """Start the broker unless one answers already; return once it answers a metadata request."""
    folder = home()
    pid = _running_pid(folder)
    if _answers():
        by = f"pid {pid}" if pid else f"not started from {folder}"
        return f"Kafka is already running on {bootstrap_servers()} ({by})."
    if pid is None:  # else our broker is still starting: wait for it instead of launching a second one
        java = _require("java", "Install Java 17 or newer (apt-get install openjdk-17-jre-headless).")
        _ensure_jars(folder)
        _write_configs(folder)
        _format_storage(java, folder)
        pid = _launch(java, folder)
    took = _wait_until_ready(pid, timeout)
    return f"Kafka is ready on {bootstrap_servers()} after {took:.1f}s (pid {pid}, log {log_path()})."


def stop(timeout: float = 30.0) -> str:
    """Stop our broker: SIGTERM, then SIGKILL after `timeout` seconds. Never signals another process."""
    folder = home()
    pid_file = folder / "kafka.pid"
    pid = _running_pid(folder)
    if pid is None:
        stale = pid_file.exists()
        pid_file.unlink(missing_ok=True)
        message = "Kafka is not running" + (" (removed a stale pid file)." if stale else ".")
        if _answers():
            message += f" A broker answers on {bootstrap_servers()}, but it was not started from {folder}."
        return message
    began = time.monotonic()
    # SIGTERM first: after a clean shutdown the next start neither recovers logs nor waits ~9 s
    # for the killed broker's session to expire (broker.session.timeout.ms) before it can register.
    os.kill(pid, signal.SIGTERM)
    how = "stopped" if _wait_for_exit(pid, timeout) else f"killed after ignoring SIGTERM for {timeout:g}s"
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        _wait_for_exit(pid, 10.0)
    pid_file.unlink(missing_ok=True)
    return f"Kafka (pid {pid}) {how} in {time.monotonic() - began:.1f}s."


def status() -> KafkaStatus:
    return KafkaStatus(pid=_running_pid(home()), ready=_answers(), bootstrap=bootstrap_servers())


def tail(lines: int = 200) -> str:
    """The last `lines` lines of the broker log ('' before the first start)."""
    path = log_path()
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def logs(lines: int = 200) -> None:
    print(tail(lines) or f"No log yet at {log_path()}.")


def _require(tool: str, hint: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise KafkaLocalError(f"`{tool}` is not on PATH, and the local Kafka broker needs it. {hint}")
    return found


def _ensure_jars(folder: Path) -> None:
    lib = folder / "lib"
    if any(lib.glob("kafka_2.13-*.jar")):
        return
    mvn = _require("mvn", "Install Maven (apt-get install maven): it fetches the broker's jars.")
    print(f"Fetching the Kafka jars from Maven Central into {lib} (first start only)...", file=sys.stderr)
    # Copied into a side folder, then renamed: an interrupted download never looks complete.
    partial = folder / "lib.partial"
    shutil.rmtree(partial, ignore_errors=True)
    _run([mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
          "-DincludeScope=runtime", f"-DoutputDirectory={partial}"], "Maven could not fetch the Kafka jars")
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)


def _write_configs(folder: Path) -> None:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "server.properties").write_text(render_server_properties(folder))
    shutil.copyfile(TEMPLATES / "log4j2.properties", folder / "log4j2.properties")


def _format_storage(java: str, folder: Path) -> None:
    # Once only: formatting refuses existing data, and each JVM start costs seconds.
    if (folder / "data" / "meta.properties").exists():
        return
    print(f"Formatting the KRaft storage in {folder / 'data'} (first start only)...", file=sys.stderr)
    # The tools run without the broker's log config: its INFO lines would land in stdout, next to the id.
    tool = [java, *JVM_OPTS, "-cp", str(folder / "lib" / "*"), "kafka.tools.StorageTool"]
    out = _run([*tool, "random-uuid"], "Kafka could not make a cluster id").split()
    if not out or not CLUSTER_ID.fullmatch(out[-1]):
        raise KafkaLocalError(f"StorageTool random-uuid printed no cluster id: {out!r}")
    (folder / "cluster.id").write_text(out[-1] + "\n")
    fmt = [*tool, "format", "-t", out[-1], "-c", str(folder / "server.properties")]
    _run(fmt, "Kafka could not format its storage")


def _run(cmd: list[str], failure: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise KafkaLocalError(f"{failure} (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def _launch(java: str, folder: Path) -> int:
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [java, *JVM_OPTS, f"-XX:ErrorFile={log.parent / 'hs_err_pid%p.log'}",
           f"-Dlog4j2.configurationFile={folder / 'log4j2.properties'}",
           "-cp", str(folder / "lib" / "*"), "kafka.Kafka", str(folder / "server.properties")]
    with log.open("ab") as out, open(os.devnull, "rb") as null:
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"\n===== {now} fleet.kafka_local starts the broker =====\n".encode())
        out.flush()
        # posix_spawn, not Popen: the broker outlives us, and a Popen object warns when collected while
        # its child runs. setsid: a Ctrl-C in the terminal that started it does not reach the broker.
        redirects = [(os.POSIX_SPAWN_DUP2, null.fileno(), 0), (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                     (os.POSIX_SPAWN_DUP2, out.fileno(), 2)]
        pid = os.posix_spawn(java, cmd, os.environ, file_actions=redirects, setsid=True)
    (folder / "kafka.pid").write_text(f"{pid}\n")
    return pid


def _wait_until_ready(pid: int, timeout: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not _alive(pid):
            (home() / "kafka.pid").unlink(missing_ok=True)
            raise KafkaLocalError(f"Kafka (pid {pid}) exited while starting. End of {log_path()}:\n{tail(30)}")
        if _answers():
            return time.monotonic() - began
        time.sleep(0.5)
    raise KafkaLocalError(
        f"Kafka (pid {pid}) did not answer on {bootstrap_servers()} within {timeout:g}s and still runs "
        f"(`python -m fleet.kafka_local stop` stops it). End of {log_path()}:\n{tail(30)}"
    )


def _wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def _running_pid(folder: Path) -> int | None:
    """The pid in kafka.pid if that process is alive and is our broker: a pid can be recycled."""
    try:
        pid = int((folder / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _is_our_broker(pid, folder) else None


def _is_our_broker(pid: int, folder: Path) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in args and str(folder / "server.properties").encode() in args


def _alive(pid: int) -> bool:
    # Reaps the broker if it is our own child and exited: a zombie would look alive.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _answers(timeout: float = 3.0) -> bool:
    """True when a broker answers a metadata request: an open port alone proves nothing."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_probe(timeout))
    # Called from async code: asyncio.run needs a thread without a running loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _probe(timeout)).result()


async def _probe(timeout: float) -> bool:
    try:  # a closed port fails at once: the client (and its error logs) is not needed then
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port()), timeout)
        writer.close()
    except (OSError, asyncio.TimeoutError):
        return False
    from aiokafka import AIOKafkaClient  # imported late: the CLI and the unit tests start faster

    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)  # a broker still starting is expected, not an error to log
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers(), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        # Asks the advertised listener too: a broker that advertises a wrong address is not ready.
        if not (await asyncio.wait_for(client.fetch_all_metadata(), timeout)).brokers():
            return False
        # A freshly formatted broker answers metadata before it can coordinate groups (the offsets topic is
        # created on the first FindCoordinator): ready means consumers can join a group too.
        await asyncio.wait_for(client.coordinator_lookup(0, "eventfleet-ready-probe"), timeout)
        return True
    except Exception:
        return False
    finally:
        await client.close()
        aiokafka_log.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.kafka_local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start", help="start the broker; returns when it answers").add_argument(
        "--timeout", type=float, default=90.0)
    commands.add_parser("stop", help="stop the broker").add_argument("--timeout", type=float, default=30.0)
    commands.add_parser("status", help="pid and readiness; exit status 1 when not ready")
    commands.add_parser("logs", help="the end of the broker log").add_argument(
        "-n", "--lines", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            now = status()
            print(f"pid={now.pid} ready={now.ready} bootstrap={now.bootstrap} home={home()}")
            return 0 if now.ready else 1
        if args.command == "logs":
            logs(args.lines)
        else:
            print(start(args.timeout) if args.command == "start" else stop(args.timeout))
    except KafkaLocalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
