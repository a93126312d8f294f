"""The supervisor of `fleet up`: runs the fleet's services as separate processes and keeps them running.

It restarts a crashed one with backoff, changes a service's replica count while running (`scale`), stops them all on
Ctrl-C, and keeps a small state file that `fleet status` reads."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from fleet.catalog import http_port_of as default_http_port
from fleet.runtime.access import EXIT_ACCESS_DENIED

__all__ = ["Replica", "Supervisor", "backoff_delay", "default_http_port", "replica_http_port"]

log = structlog.get_logger("fleet.ops.supervisor")

PORT_STEP = 10  # replica n of a service listens on the service's port + 10 * (n - 1): 8101, 8111, 8121, ...
_HTTP_STARTED = re.compile(
    r'"event": ?"worker_http_started".*?"port": ?(\d+)|"port": ?(\d+).*?"event": ?"worker_http_started"'
)


def backoff_delay(restarts: int, *, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Doubles per consecutive crash: 0.5 s, 1 s, 2 s, ... capped."""
    return min(cap_s, base_s * (2 ** max(0, restarts)))


def replica_http_port(base: int, index: int) -> int:
    """Deterministic per replica: base + 10 * (index - 1); 0 stays 0 (each replica picks a free port and logs it)."""
    return 0 if base == 0 else base + PORT_STEP * (index - 1)


def _die_with_parent() -> None:
    """Linux: a replica gets SIGTERM if the supervisor dies without stopping it (SIGKILL, a crash): none is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Replica:
    """One process of one service, with its own JSON log file."""

    service: str
    index: int
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)
    # starting, up, restarting (waiting out its backoff), stopping, stopped, refused (by Kafka: not restarted)
    status: str = "starting"
    http_port: int | None = None  # the port it really listens on, once its log says so
    started_at: float = 0.0
    _log_offset: int = 0

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def spawned(self) -> asyncio.subprocess.Process:
        """Its process: the supervisor spawns one before it signals or waits for the replica."""
        if self.process is None:
            raise RuntimeError(f"replica {self.name} has not been started")
        return self.process

    @property
    def wanted_port(self) -> int:
        return int(self.env.get(f"{self.service.upper()}_HTTP_PORT", "0") or 0)

    def learn_port(self) -> int | None:
        """The port from the replica's `worker_http_started` log line (a busy port falls back to a free one)."""
        if self.http_port is None and self.log_path.exists():
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
            for match in _HTTP_STARTED.finditer(text):
                self.http_port = int(match.group(1) or match.group(2))
        return self.http_port

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "service": self.service,
            "index": self.index,
            "pid": self.process.pid if self.process else None,
            "status": self.status,
            "restarts": self.restarts,
            "http_port": self.learn_port() if self.status == "up" else self.http_port,
            "wanted_http_port": self.wanted_port,
            "log": str(self.log_path),
        }


class Supervisor:
    """Keeps every replica running until `stop()`; then SIGTERM to each, SIGKILL after the grace period."""

    def __init__(
        self,
        services: list[str],
        *,
        state_dir: Path,
        grace_s: float = 20.0,
        env: dict[str, str] | None = None,
        scale: dict[str, int] | None = None,
        service_env: dict[str, dict[str, str]] | None = None,
        state_file: Path | None = None,
        extra_state: dict | None = None,
    ) -> None:
        """`scale` gives a service more (or fewer) than one replica; `service_env` adds variables for one service's
        replicas only; `state_file`, when given, is rewritten (atomically) after every change, for `fleet status`."""
        self.grace_s = grace_s
        self.state_dir = state_dir
        self.state_file = state_file
        self.extra_state = extra_state or {}
        self._stopping = asyncio.Event()
        self._base_env = {**os.environ, "FLEET_LOG_FORMAT": "json", **(env or {})}
        self._service_env = service_env or {}
        scale = scale or {}
        self.services = list(dict.fromkeys([*services, *scale]))
        self.desired = {s: scale.get(s, 1) for s in self.services}
        self.replicas: list[Replica] = [
            self._replica(s, n) for s in self.services for n in range(1, self.desired[s] + 1)
        ]
        self.retired: list[Replica] = []  # replicas removed by scaling down: kept for their restart counts
        self._tasks: dict[str, asyncio.Task] = {}
        self._scaling = asyncio.Lock()

    def _replica(self, service: str, index: int) -> Replica:
        env = {**self._base_env, "FLEET_REPLICA_ID": f"{service}-{index}", **self._service_env.get(service, {})}
        port_var = f"{service.upper()}_HTTP_PORT"
        if port_var not in self._service_env.get(service, {}):
            base = (
                int(self._base_env[port_var])
                if self._base_env.get(port_var, "").isdigit()
                else default_http_port(service)
            )
            env[port_var] = str(replica_http_port(base, index))
        return Replica(service, index, self.state_dir / "logs" / f"{service}-{index}.log", env=env)

    def replica(self, service: str, index: int = 1) -> Replica:
        return next(r for r in self.replicas if r.service == service and r.index == index)

    def replicas_of(self, service: str) -> list[Replica]:
        return sorted((r for r in self.replicas if r.service == service), key=lambda r: r.index)

    def signal(self, service: str, index: int, signum: int) -> int:
        """Sends `signum` to one replica (chaos runs: SIGKILL, SIGTERM); a replica that then exits is restarted as after
        a crash. Returns the pid signalled."""
        process = self.replica(service, index).spawned()
        process.send_signal(signum)
        return process.pid

    async def start(self) -> None:
        for replica in self.replicas:
            await self._launch(replica)
        self.write_state()
        if self.state_file is not None:
            self._tasks["-state-"] = asyncio.create_task(self._refresh_state())

    async def _refresh_state(self, every_s: float = 1.0) -> None:
        """Rewrites the state file when a replica's log has told its port since."""
        while not self._stopping.is_set():
            await asyncio.sleep(every_s)
            if any(r.http_port is None and r.status == "up" and r.learn_port() for r in self.replicas):
                self.write_state()

    async def _launch(self, replica: Replica) -> None:
        replica.log_path.parent.mkdir(parents=True, exist_ok=True)
        await self._spawn(replica)
        self._tasks[replica.name] = asyncio.create_task(self._keep_alive(replica))

    async def _spawn(self, replica: Replica) -> None:
        replica._log_offset = replica.log_path.stat().st_size if replica.log_path.exists() else 0
        replica.http_port = None
        # The child has its own copy of the file once started: the supervisor's is closed at once.
        with open(replica.log_path, "ab") as log_file:
            # A session of its own: Ctrl-C reaches only the supervisor, which then stops replicas in order.
            replica.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fleet",
                "run",
                replica.service,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=replica.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        replica.status, replica.started_at = "up", time.time()
        log.info(
            "replica_started",
            replica=replica.name,
            pid=replica.process.pid,
            log=str(replica.log_path),
            http_port=replica.wanted_port,
        )
        self.write_state()

    async def _keep_alive(self, replica: Replica) -> None:
        while True:
            code = await replica.spawned().wait()
            if self._stopping.is_set() or replica.status in ("stopping", "stopped"):
                return
            if code == EXIT_ACCESS_DENIED:  # Kafka refused its password or an ACL: a restart would be refused alike
                replica.status = "refused"
                log.error(
                    "replica_refused_by_kafka",
                    replica=replica.name,
                    exit_code=code,
                    log=str(replica.log_path),
                    hint=(
                        "its log's kafka_access_denied line says what was refused; fix it, then scale the service again"
                    ),
                )
                self.write_state()
                return
            delay = backoff_delay(replica.restarts)
            log.warning(
                "replica_crashed", replica=replica.name, exit_code=code, restart_in_s=delay, log=str(replica.log_path)
            )
            replica.restarts += 1
            replica.status = "restarting"
            self.write_state()
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                return
            except TimeoutError:
                if replica.status != "restarting":  # scaled away while waiting out its backoff
                    return
                await self._spawn(replica)

    async def scale(self, service: str, count: int) -> dict[str, list[str]]:
        """Runs `count` replicas of `service`: new ones are numbered after the highest; scaling down stops the
        highest-numbered replicas with SIGTERM and waits for each to exit gracefully (SIGKILL after the grace period).
        Returns the replicas started and stopped."""
        if count < 0:
            raise ValueError(f"{service}: a replica count cannot be negative ({count})")
        async with self._scaling:
            if self._stopping.is_set():
                return {"started": [], "stopped": []}
            if service not in self.services:
                self.services.append(service)
            self.desired[service] = count
            current = self.replicas_of(service)
            started: list[Replica] = []
            for index in range(len(current) + 1, count + 1):
                replica = self._replica(service, index)
                self.replicas.append(replica)
                await self._launch(replica)
                started.append(replica)
            leaving = list(reversed(current[count:]))
            for replica in leaving:
                replica.status = "stopping"
            self.write_state()
            for replica in leaving:
                await self._stop_one(replica)
                self.replicas.remove(replica)
                self.retired.append(replica)
                task = self._tasks.pop(replica.name, None)
                if task is not None:
                    task.cancel()
            self.write_state()
            log.info(
                "service_scaled",
                service=service,
                replicas=count,
                started=[r.name for r in started],
                stopped=[r.name for r in leaving],
            )
            return {"started": [r.name for r in started], "stopped": [r.name for r in leaving]}

    async def _stop_one(self, replica: Replica) -> None:
        replica.status = "stopping"
        process = replica.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=self.grace_s)
            except TimeoutError:
                log.warning("replica_killed", replica=replica.name, after_s=self.grace_s)
                process.kill()
                await process.wait()
        replica.status = "stopped"
        log.info("replica_stopped", replica=replica.name, exit_code=process.returncode if process else None)

    async def stop(self) -> None:
        self._stopping.set()
        async with self._scaling:
            running = [r for r in self.replicas if r.process and r.process.returncode is None]
            for replica in self.replicas:
                replica.status = "stopping"
            self.write_state()
            await asyncio.gather(*(self._stop_one(replica) for replica in running))
            for replica in self.replicas:
                replica.status = "stopped"
            for task in self._tasks.values():
                task.cancel()
            self.write_state()

    # ---- the state file ---------------------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "pid": os.getpid(),
            "updated_at": time.time(),
            **self.extra_state,
            "services": {s: self.desired.get(s, 0) for s in self.services},
            "replicas": [
                r.as_dict() for r in sorted(self.replicas, key=lambda r: (self.services.index(r.service), r.index))
            ],
        }

    def write_state(self) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}")
        partial.write_text(json.dumps(self.state(), indent=1) + "\n")
        os.replace(partial, self.state_file)
