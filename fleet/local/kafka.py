"""Runs a single-node Apache Kafka broker (KRaft) for local development, from jars off Maven Central."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import importlib.resources
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from contracts.connection import KafkaConnection, Secret

HOST = "127.0.0.1"
# Package data, so an installed `fleet` assembles the broker too: the POM (kafka_2.13 and its logging), beside it
# server.properties.template, secure.properties.template, cluster.properties.template and log4j2.properties.
TEMPLATES = Path(str(importlib.resources.files("fleet.local") / "broker_files"))
POM = TEMPLATES / "pom.xml"
ADMIN = "admin"  # the secure broker's super user: the operators' CLI and the broker talking to itself
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
    return Path(custom).resolve() if custom else Path.cwd() / ".cache" / "kafka"


def port() -> int:
    return int(os.environ.get("FLEET_KAFKA_PORT", "9092"))


def controller_port() -> int:
    return int(os.environ.get("FLEET_KAFKA_CONTROLLER_PORT", "9093"))


def bootstrap_servers() -> str:
    return f"{HOST}:{port()}"


def log_path() -> Path:
    return home() / "logs" / "server.log"


def secure_dir(folder: Path | None = None) -> Path:
    """The secure broker's TLS files, its users' passwords (credentials/<user>.password) and fleet.env."""
    return (folder or home()) / "secure"


def is_secure(folder: Path | None = None) -> bool:
    """Whether the broker in `folder` was set up with TLS, SCRAM and ACLs (it stays so until its data is deleted)."""
    return (secure_dir(folder) / "credentials" / f"{ADMIN}.password").exists()


def connection(user: str = ADMIN, folder: Path | None = None) -> KafkaConnection:
    """How a client reaches the local broker: plaintext, or TLS + SCRAM as `user` on a secure one."""
    folder = folder or home()
    if not is_secure(folder):
        return KafkaConnection(bootstrap_servers())
    secure = secure_dir(folder)
    password = (secure / "credentials" / f"{user}.password").read_text().strip()
    return KafkaConnection(bootstrap_servers(), "SASL_SSL", user, Secret(password), ssl_cafile=secure / "ca.pem")


def render_server_properties(folder: Path) -> str:
    template = (TEMPLATES / "server.properties.template").read_text()
    text = template.format(host=HOST, port=port(), controller_port=controller_port(), data=folder / "data")
    if is_secure(folder):
        secure = secure_dir(folder)
        text += (
            (TEMPLATES / "secure.properties.template")
            .read_text()
            .format(
                host=HOST,
                port=port(),
                controller_port=controller_port(),
                keystore=secure / "keystore.pem",
                truststore=secure / "ca.pem",
                admin_password=connection(ADMIN, folder).sasl_credentials()[1],
                # The subject of fleet.local.tls's broker certificate, as Kafka prints it.
                broker_principal=f"CN={HOST},O=eventfleet local",
            )
        )
    return text


def client_env(folder: Path | None = None) -> dict[str, str]:
    """The FLEET_KAFKA_ variables that point a fleet process at this broker
    (each worker then logs in as its service)."""
    folder = folder or home()
    env = {"FLEET_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers()}
    if is_secure(folder):
        secure = secure_dir(folder)
        env |= {
            "FLEET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FLEET_KAFKA_SSL_CAFILE": str(secure / "ca.pem"),
            "FLEET_KAFKA_CREDENTIALS_DIR": str(secure / "credentials"),
        }
    return env


def start(timeout: float = 90.0, *, secure: bool | None = None, users: Sequence[str] = ()) -> str:
    """Start the broker unless one answers already; return once it answers a metadata request.
    `secure`: a new broker's data is set up for TLS + SCRAM + ACLs (docs/security.md); None keeps the mode it has.
    `users`: on a secure broker, the SCRAM users besides admin (the caller knows the fleet's:
    `fleet.ops.acls.fleet_users`)."""
    folder = home()
    pid = _running_pid(folder)
    secure = is_secure(folder) if secure is None else secure
    _check_mode(folder, secure)
    if _answers():
        by = f"pid {pid}" if pid else f"not started from {folder}"
        if is_secure(folder):
            _ensure_secure_files(
                folder, users
            )  # a password for each user of the fleet as it is now (a service added since)
        return (
            f"Kafka is already running on {bootstrap_servers()} "
            f"({by}{', secure' if is_secure(folder) else ''}){_users_added(folder)}."
        )
    if pid is None:  # else our broker is still starting: wait for it instead of launching a second one
        java = _require("java", "Install Java 17 or newer (apt-get install openjdk-17-jre-headless).")
        _ensure_jars(folder)
        if secure:
            _ensure_secure_files(folder, users)
        _write_configs(folder)
        _format_storage(java, folder)
        pid = _launch(java, folder)
    took = _wait_until_ready(pid, timeout)
    mode = f", TLS + SCRAM; clients' settings in {secure_dir(folder) / 'fleet.env'}" if is_secure(folder) else ""
    return (
        f"Kafka is ready on {bootstrap_servers()} after {took:.1f}s "
        f"(pid {pid}, log {log_path()}{mode}){_users_added(folder)}."
    )


def _users_added(folder: Path) -> str:
    """On a secure broker: every user with a password file gets a SCRAM credential, if it has none yet (a service added
    since the storage was formatted, too). Only admin's is written at format time: the broker logs in as admin."""
    if not is_secure(folder):
        return ""
    from fleet.local.scram import add_missing_users

    credentials = secure_dir(folder) / "credentials"
    passwords = {path.stem: path.read_text().strip() for path in sorted(credentials.glob("*.password"))}
    added = _run_async(lambda: add_missing_users(connection(ADMIN, folder), passwords))
    return f"; SCRAM users added: {', '.join(added)}" if added else ""


def _check_mode(folder: Path, secure: bool) -> None:
    """A formatted broker cannot change mode: its SCRAM users are written when the storage is formatted."""
    formatted = (folder / "data" / "meta.properties").exists()
    if formatted and secure != is_secure(folder):
        have, want = ("secure", "plaintext") if is_secure(folder) else ("plaintext", "secure")
        raise KafkaLocalError(
            f"the broker in {folder} is {have}; a {want} one needs its own FLEET_KAFKA_HOME "
            f"(or delete {folder / 'data'} to start over)"
        )


def _ensure_secure_files(folder: Path, users: Sequence[str] = ()) -> None:
    """A throwaway CA and broker certificate (made anew when they are about to expire), and one password per user of
    the fleet (made once: they are stored in the broker's data when its storage is formatted)."""
    from fleet.local import tls

    secure = secure_dir(folder)
    credentials = secure / "credentials"
    credentials.mkdir(parents=True, exist_ok=True)
    os.chmod(credentials, 0o700)
    for user in (ADMIN, *users):
        path = credentials / f"{user}.password"
        if not path.exists():
            tls.write_private(path, (secrets.token_urlsafe(24) + "\n").encode())
    files = tls.LocalTls(secure / "ca.pem", secure / "broker-chain.pem", secure / "broker-key.pem")
    if not files.broker_cert.exists() or files.expires_within(tls.RENEW_BEFORE):
        files = tls.make_local_tls(secure)
    tls.write_private(secure / "keystore.pem", files.broker_key.read_bytes() + files.broker_cert.read_bytes())
    (secure / "fleet.env").write_text(
        "# Source it (set -a; . this file; set +a): the fleet's processes then connect to the secure local broker.\n"
        "# Each worker is its own SCRAM user (its service name) "
        "and reads its own password from the credentials folder;\n"
        "# the CLI connects as admin. Passwords never appear in this file or in logs.\n"
        + "".join(f"{name}={value}\n" for name, value in client_env(folder).items())
    )


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
    _run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ],
        "Maven could not fetch the Kafka jars",
    )
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)


def _write_configs(folder: Path) -> None:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    text = render_server_properties(folder)
    if is_secure(folder):  # it holds the admin password (the broker's own login): its owner only may read it
        from fleet.local.tls import write_private

        write_private(folder / "server.properties", text.encode())
    else:
        (folder / "server.properties").write_text(text)
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
    if is_secure(folder):  # admin goes into the bootstrap metadata: the broker authenticates itself as admin at once
        admin = (secure_dir(folder) / "credentials" / f"{ADMIN}.password").read_text().strip()
        fmt += ["--add-scram", f"SCRAM-SHA-512=[name={ADMIN},password={admin}]"]  # the others: _users_added, not argv
    _run(fmt, "Kafka could not format its storage")


def _run(cmd: list[str], failure: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise KafkaLocalError(f"{failure} (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def _launch(java: str, folder: Path) -> int:
    return spawn_kafka(java, folder, folder / "server.properties", log_path(), "fleet.local.kafka starts the broker")


def spawn_kafka(java: str, folder: Path, properties: Path, log: Path, banner: str) -> int:
    """Starts `kafka.Kafka properties` with the jars and log config of `folder`, its output appended to `log`; writes
    its pid beside `properties` (kafka.pid) and returns it. The cluster's nodes start the same way."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        java,
        *JVM_OPTS,
        f"-XX:ErrorFile={log.parent / 'hs_err_pid%p.log'}",
        f"-Dlog4j2.configurationFile={folder / 'log4j2.properties'}",
        "-cp",
        str(folder / "lib" / "*"),
        "kafka.Kafka",
        str(properties),
    ]
    with log.open("ab") as out, open(os.devnull, "rb") as null:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {banner} =====\n".encode())
        out.flush()
        # posix_spawn, not Popen: the broker outlives us, and a Popen object warns when collected while
        # its child runs. setsid: a Ctrl-C in the terminal that started it does not reach the broker.
        redirects = [
            (os.POSIX_SPAWN_DUP2, null.fileno(), 0),
            (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, out.fileno(), 2),
        ]
        pid = os.posix_spawn(java, cmd, os.environ, file_actions=redirects, setsid=True)
    (properties.parent / "kafka.pid").write_text(f"{pid}\n")
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
        f"(`python -m fleet.local.kafka stop` stops it). End of {log_path()}:\n{tail(30)}"
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
    return _run_async(lambda: _probe(timeout))


def _run_async(coroutine):
    """Runs `coroutine()` to its end from sync code, even when that code was called from a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine())
    # Called from async code: asyncio.run needs a thread without a running loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine())).result()


async def _probe(timeout: float) -> bool:
    try:  # a closed port fails at once: the client (and its error logs) is not needed then
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port()), timeout)
        writer.close()
    except (TimeoutError, OSError):
        return False
    from aiokafka import AIOKafkaClient  # imported late: the CLI and the unit tests start faster

    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)  # a broker still starting is expected, not an error to log
    client = AIOKafkaClient(**connection().aiokafka_options(), request_timeout_ms=int(timeout * 1000))
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
    parser = argparse.ArgumentParser(prog="python -m fleet.local.kafka", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start", help="start the broker; returns when it answers").add_argument(
        "--timeout", type=float, default=90.0
    )
    commands.add_parser("stop", help="stop the broker").add_argument("--timeout", type=float, default=30.0)
    commands.add_parser("status", help="pid and readiness; exit status 1 when not ready")
    commands.add_parser("logs", help="the end of the broker log").add_argument("-n", "--lines", type=int, default=200)
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
