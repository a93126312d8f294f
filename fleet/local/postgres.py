"""A throwaway local PostgreSQL cluster for dev and tests (`make postgres`).

From Debian's packages, with its data under .cache/postgres."""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
SERVER_USER = "postgres"  # the OS user the server runs as when we are root: PostgreSQL refuses to run as root
ROLE = DATABASE = "eventfleet"
# Debian installs the server binaries per major version, off PATH.
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"

# Trust on loopback, no passwords: this cluster is a throwaway for dev and tests, reachable only from this machine.
# Never copy this file to a real server.
PG_HBA = """\
# eventfleet's throwaway dev/test cluster: trust on loopback only (no passwords). Never use this on a real server.
local   all   all                  trust
host    all   all   127.0.0.1/32   trust
host    all   all   ::1/128        trust
"""


class PostgresLocalError(RuntimeError):
    """The local cluster could not be installed, set up, started or stopped."""


@dataclass(frozen=True)
class PostgresStatus:
    pid: int | None  # the postmaster of our cluster; None when it does not run
    ready: bool  # a server accepts connections on `HOST:port()`
    dsn: str


def home() -> Path:
    """The cache folder: data, socket, log."""
    custom = os.environ.get("FLEET_POSTGRES_HOME")
    return Path(custom).resolve() if custom else Path.cwd() / ".cache" / "postgres"


def port() -> int:
    return int(os.environ.get("FLEET_POSTGRES_PORT", "55432"))


def dsn(database: str = DATABASE) -> str:
    """The URL services and tests connect with (no password: see PG_HBA)."""
    return f"postgresql://{ROLE}@{HOST}:{port()}/{database}"


def log_path() -> Path:
    return home() / "log" / "postgres.log"


def render_config(folder: Path) -> str:
    """Settings of the throwaway cluster, included from its postgresql.conf."""
    return "\n".join(
        [
            "# Written by fleet.local.postgres at every start.",
            f"listen_addresses = '{HOST}'",
            f"port = {port()}",
            # Our own socket folder: /var/run/postgresql may be missing or not ours on a clean machine.
            f"unix_socket_directories = '{folder / 'run'}'",
            # A throwaway cluster: speed over crash safety (a lost cluster is re-created by the next start).
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "",
        ]
    )


def start(timeout: float = 60.0) -> str:
    """Install, initialise and start the cluster as needed; return once it accepts connections,
    with role and database."""
    began = time.monotonic()
    if _accepts():
        _ensure_role_and_database()
        return f"PostgreSQL is already running on {HOST}:{port()} ({dsn()})."
    bin_dir = _bin_dir() or _install()
    folder = home()
    _prepare_folders(folder)
    _init_cluster(bin_dir, folder)
    _write_config(folder)
    _launch(bin_dir, folder, timeout)
    _ensure_role_and_database()
    return f"PostgreSQL is ready on {HOST}:{port()} after {time.monotonic() - began:.1f}s ({dsn()}, log {log_path()})."


def stop(timeout: float = 30.0) -> str:
    """Stop our cluster (fast shutdown: open sessions are rolled back). Never signals another server."""
    folder = home()
    pid = _postmaster_pid(folder)
    if pid is None:
        return "PostgreSQL is not running."
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise PostgresLocalError("the cluster runs, but no PostgreSQL binaries were found to stop it")
    began = time.monotonic()
    _run_as_server(
        [str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "-w", "-t", f"{timeout:.0f}", "stop"],
        "pg_ctl could not stop the cluster",
    )
    return f"PostgreSQL (pid {pid}) stopped in {time.monotonic() - began:.1f}s."


def status() -> PostgresStatus:
    return PostgresStatus(pid=_postmaster_pid(home()), ready=_accepts(), dsn=dsn())


def tail(lines: int = 30) -> str:
    path = log_path()
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _bin_dir() -> Path | None:
    """The newest installed server's binaries (FLEET_POSTGRES_BIN overrides), or None."""
    custom = os.environ.get("FLEET_POSTGRES_BIN")
    if custom:
        return Path(custom)
    found = sorted(Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")), key=lambda p: _version_of(p.parent.name))
    found = [folder for folder in found if (folder / "initdb").exists()]
    return found[-1] if found else None


def _version_of(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _install() -> Path:
    if os.geteuid() != 0:
        raise PostgresLocalError("PostgreSQL is not installed. Install it with `sudo apt-get install -y postgresql`.")
    print("Installing PostgreSQL from Debian's packages (first start only)...", file=sys.stderr)
    quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], "apt-get update failed", env=quiet)
    _run(["apt-get", "install", "-y", "-q", "postgresql"], "apt-get install postgresql failed", env=quiet)
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise PostgresLocalError(f"apt-get installed postgresql, but no initdb was found under {DEBIAN_BIN_DIRS}")
    return bin_dir


def _prepare_folders(folder: Path) -> None:
    for sub in ("data", "run", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "data").chmod(0o700)  # initdb and the server refuse a data folder others can read
    _give_to_server(folder, *(folder / sub for sub in ("data", "run", "log")))


def _init_cluster(bin_dir: Path, folder: Path) -> None:
    data = folder / "data"
    if (data / "PG_VERSION").exists():
        return  # once only: initdb refuses a non-empty folder
    print(f"Initialising a PostgreSQL cluster in {data} (first start only)...", file=sys.stderr)
    _run_as_server(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ],
        "initdb failed",
    )


def _write_config(folder: Path) -> None:
    data = folder / "data"
    (data / "eventfleet.conf").write_text(render_config(folder))
    (data / "pg_hba.conf").write_text(PG_HBA)
    main = data / "postgresql.conf"
    if "include_if_exists 'eventfleet.conf'" not in main.read_text():
        with main.open("a") as conf:
            conf.write("\ninclude_if_exists 'eventfleet.conf'\n")
    _give_to_server(data / "eventfleet.conf", data / "pg_hba.conf")


def _launch(bin_dir: Path, folder: Path, timeout: float) -> None:
    # pg_ctl -w returns once the server accepts connections; the postmaster detaches (setsid), so Ctrl-C in make
    # does not reach it, and its output goes to the log, not to our pipes.
    command = [
        str(bin_dir / "pg_ctl"),
        "-D",
        str(folder / "data"),
        "-l",
        str(log_path()),
        "-w",
        "-t",
        f"{timeout:.0f}",
        "start",
    ]
    try:
        _run_as_server(command, "pg_ctl could not start the cluster")
    except PostgresLocalError as error:
        if not _accepts():  # else another `make postgres` started it meanwhile
            raise PostgresLocalError(f"{error}\nEnd of {log_path()}:\n{tail()}") from None


def _ensure_role_and_database() -> None:
    """The role and database the DSN names; created over TCP as the superuser (trust, see PG_HBA)."""
    if _psql("postgres", f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'") != "1":
        _psql("postgres", f"CREATE ROLE {ROLE} LOGIN CREATEDB")
    ensure_database(DATABASE)


def ensure_database(name: str, *, fresh: bool = False) -> str:
    """A database of the running cluster, owned by the fleet's role (one per service when services share a cluster);
    `fresh` drops it first. Returns its DSN."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise PostgresLocalError(f"not a plain database name: {name!r}")
    if fresh:
        _psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    if _psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
        _psql("postgres", f"CREATE DATABASE {name} OWNER {ROLE}")
    return dsn(name)


def _psql(database: str, sql: str) -> str:
    bin_dir = _bin_dir()
    psql = str(bin_dir / "psql") if bin_dir else "psql"
    command = [
        psql,
        "-X",
        "-q",
        "-tA",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        HOST,
        "-p",
        str(port()),
        "-U",
        "postgres",
        "-d",
        database,
        "-c",
        sql,
    ]
    return _run(command, f"psql could not run {sql!r}").strip()


def _accepts() -> bool:
    """True when a server on HOST:port() accepts connections (pg_isready: no client library needed)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        return False
    done = subprocess.run(
        [str(bin_dir / "pg_isready"), "-q", "-h", HOST, "-p", str(port()), "-t", "3"], capture_output=True
    )
    return done.returncode == 0


def _postmaster_pid(folder: Path) -> int | None:
    try:
        pid = int((folder / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _is_our_postmaster(pid, folder) else None


def _is_our_postmaster(pid: int, folder: Path) -> bool:
    """A stale postmaster.pid can name a recycled pid: the process must be a server on our data folder."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(folder / "data").encode() in args


def _server_user() -> pwd.struct_passwd | None:
    """The OS user the server must run as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresLocalError(f"there is no `{SERVER_USER}` OS user to run the server as (root may not)") from None


def _give_to_server(*paths: Path) -> None:
    server = _server_user()
    if server is None:
        return
    for path in paths:
        os.chown(path, server.pw_uid, server.pw_gid)


def _run_as_server(command: list[str], failure: str) -> str:
    server = _server_user()
    if server is None:
        return _run(command, failure)
    try:
        # cwd: a folder the server's user may enter (our own cwd may be closed to it).
        return _run(command, failure, user=server.pw_uid, group=server.pw_gid, extra_groups=[], cwd=str(home()))
    except (PostgresLocalError, PermissionError) as error:
        if "Permission denied" not in str(error):
            raise
        raise PostgresLocalError(
            f"{error}\nThe `{SERVER_USER}` OS user must be able to enter {home()}: open its parent "
            "folders to others (chmod o+x) or set FLEET_POSTGRES_HOME to a folder it can reach."
        ) from None


def _run(command: list[str], failure: str, **options) -> str:
    if not shutil.which(command[0]):
        raise PostgresLocalError(f"{failure}: {command[0]} not found")
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, **options)
    if done.returncode != 0:
        raise PostgresLocalError(f"{failure} (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.local.postgres", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "start", help="install, initialise and start; returns when it accepts connections"
    ).add_argument("--timeout", type=float, default=60.0)
    commands.add_parser("stop", help="stop the cluster").add_argument("--timeout", type=float, default=30.0)
    commands.add_parser("status", help="pid, readiness and DSN; exit status 1 when not ready")
    commands.add_parser("dsn", help="print the DSN")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            now = status()
            print(f"pid={now.pid} ready={now.ready} dsn={now.dsn} home={home()}")
            return 0 if now.ready else 1
        if args.command == "dsn":
            print(dsn())
        else:
            print(start(args.timeout) if args.command == "start" else stop(args.timeout))
    except PostgresLocalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
