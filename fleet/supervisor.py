"""`fleet up`: runs services as separate processes, restarts a crashed one with backoff, stops them all on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import structlog

__all__ = ["Replica", "Supervisor", "backoff_delay"]

log = structlog.get_logger("fleet.supervisor")


def backoff_delay(restarts: int, *, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Doubles per consecutive crash: 0.5 s, 1 s, 2 s, ... capped."""
    return min(cap_s, base_s * (2 ** max(0, restarts)))


def _die_with_parent() -> None:
    """Linux: the replica gets SIGTERM if the supervisor dies without stopping it (SIGKILL, a crash), so none is orphaned."""
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

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"


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
    ) -> None:
        """`scale` gives a service more than one replica; `service_env` adds variables for one service's replicas only."""
        self.grace_s = grace_s
        self._stopping = asyncio.Event()
        base_env = {**os.environ, "FLEET_LOG_FORMAT": "json", **(env or {})}
        scale, service_env = scale or {}, service_env or {}
        self.replicas = [
            Replica(s, n, state_dir / "logs" / f"{s}-{n}.log", env={**base_env, "FLEET_REPLICA_ID": f"{s}-{n}", **service_env.get(s, {})})
            for s in services
            for n in range(1, scale.get(s, 1) + 1)
        ]
        self._tasks: list[asyncio.Task] = []

    def replica(self, service: str, index: int = 1) -> Replica:
        return next(r for r in self.replicas if r.service == service and r.index == index)

    def signal(self, service: str, index: int, signum: int) -> int:
        """Sends `signum` to one replica (chaos runs: SIGKILL, SIGTERM); a replica that then exits is restarted as after
        a crash. Returns the pid signalled."""
        process = self.replica(service, index).process
        process.send_signal(signum)
        return process.pid

    async def start(self) -> None:
        for replica in self.replicas:
            replica.log_path.parent.mkdir(parents=True, exist_ok=True)
            await self._spawn(replica)
            self._tasks.append(asyncio.create_task(self._keep_alive(replica)))

    async def _spawn(self, replica: Replica) -> None:
        log_file = open(replica.log_path, "ab")
        try:
            # A session of its own: Ctrl-C reaches only the supervisor, which then stops replicas in order.
            replica.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fleet", "run", replica.service,
                stdout=log_file, stderr=asyncio.subprocess.STDOUT, env=replica.env, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log_file.close()
        log.info("replica_started", replica=replica.name, pid=replica.process.pid, log=str(replica.log_path))

    async def _keep_alive(self, replica: Replica) -> None:
        while True:
            code = await replica.process.wait()
            if self._stopping.is_set():
                return
            delay = backoff_delay(replica.restarts)
            log.warning("replica_crashed", replica=replica.name, exit_code=code, restart_in_s=delay, log=str(replica.log_path))
            replica.restarts += 1
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                return
            except asyncio.TimeoutError:
                await self._spawn(replica)

    async def stop(self) -> None:
        self._stopping.set()
        running = [r for r in self.replicas if r.process and r.process.returncode is None]
        for replica in running:
            replica.process.send_signal(signal.SIGTERM)
        for replica in running:
            try:
                await asyncio.wait_for(replica.process.wait(), timeout=self.grace_s)
            except asyncio.TimeoutError:
                log.warning("replica_killed", replica=replica.name, after_s=self.grace_s)
                replica.process.kill()
                await replica.process.wait()
            log.info("replica_stopped", replica=replica.name, exit_code=replica.process.returncode)
        for task in self._tasks:
            task.cancel()
