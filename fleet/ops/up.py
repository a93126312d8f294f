"""The whole local fleet in one command: broker, topics, services, and optionally a demo feed shown as it flows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Callable

import structlog

from contracts.connection import KafkaConnection
from fleet.catalog import WORKERS, service_wiring
from fleet.local import kafka as kafka_local
from fleet.ops.acls import apply_acls, fleet_acls, fleet_users
from fleet.ops.demo import DEMO_SERVICE, WAREHOUSE, publish_demo_orders, publish_demo_stock, trickle_demo_orders
from fleet.ops.supervisor import Supervisor
from fleet.ops.topics import apply_topics
from fleet.ops.watch import watch_events
from fleet.runtime.keys import UPSTREAM_SIGNERS, KeyStore, init_keys
from fleet.runtime.settings import KeySettings

__all__ = ["FleetAlreadyRunning", "NoFleetRunning", "request_scale", "run_fleet", "state_file_of"]

log = structlog.get_logger("fleet.ops.up")


class FleetAlreadyRunning(RuntimeError):
    """`fleet up` where a live `fleet up` already runs from the same state folder."""


class NoFleetRunning(LookupError):
    """`fleet scale` with no live `fleet up` to ask, or one that stopped before it answered."""


async def run_fleet(
    services: list[str],
    *,
    state_dir: Path,
    emit: Callable[[str], None],
    demo_orders: int = 0,
    trickle_every_s: float = 0.0,
    scale: dict[str, int] | None = None,
) -> None:
    """Runs until SIGINT/SIGTERM, then stops the feed, the services and (if it started it) the broker."""
    state_file = state_file_of(state_dir)
    if (running := _running_pid(state_file)) is not None:
        raise FleetAlreadyRunning(f"a fleet already runs from {state_dir} (pid {running}); `fleet down` stops it")
    keys_dir = KeySettings().dir
    for kid in init_keys(keys_dir, [*WORKERS, *UPSTREAM_SIGNERS]):
        emit(f"created dev key {kid} in {keys_dir}")
    storefront = KeyStore.for_signer(keys_dir, DEMO_SERVICE)
    started_broker = not kafka_local.status().ready
    emit(kafka_local.start(users=fleet_users()))
    bootstrap = kafka_local.connection()  # as admin on a secure broker (`make kafka-secure`)
    os.environ.update(kafka_local.client_env())  # the workers' way in: on a secure broker, each logs in as its service
    for change in await apply_topics(bootstrap):
        emit(f"topic {change}")
    if kafka_local.is_secure():
        plan = await apply_acls(bootstrap, fleet_acls(service_wiring()), fleet_users())
        emit(f"acls: {len(plan.add)} added, {len(plan.remove)} removed, {len(plan.keep)} unchanged")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    _clear_requests(state_dir)
    supervisor = Supervisor(
        services,
        state_dir=state_dir,
        scale=scale,
        state_file=state_file,
        extra_state={"bootstrap": bootstrap.bootstrap_servers, "started_at": time.time()},
    )
    try:
        await _supervise(
            supervisor, state_dir, bootstrap, emit, stop, keys_dir, storefront, demo_orders, trickle_every_s
        )
    finally:
        await supervisor.stop()
        state_file.unlink(missing_ok=True)
    if started_broker:
        emit(kafka_local.stop())


async def _supervise(
    supervisor: Supervisor,
    state_dir: Path,
    bootstrap: KafkaConnection,
    emit: Callable[[str], None],
    stop: asyncio.Event,
    keys_dir: Path,
    storefront: KeyStore,
    demo_orders: int,
    trickle_every_s: float,
) -> None:
    await supervisor.start()
    state_file = supervisor.state_file
    emit(
        f"fleet up: {', '.join(f'{s}×{n}' for s, n in supervisor.desired.items())}; logs in {state_dir / 'logs'}; "
        f"state in {state_file}; Ctrl-C or `fleet down` stops everything, `fleet scale SERVICE=N` changes replicas"
    )
    control = asyncio.create_task(_serve_scale_requests(supervisor, state_dir, emit, stop))
    watching = asyncio.Event()
    tasks: list[asyncio.Task[object]] = [asyncio.create_task(watch_events(bootstrap, emit, stop, ready=watching))]
    await asyncio.wait([tasks[0], asyncio.create_task(watching.wait())], return_when=asyncio.FIRST_COMPLETED)
    if demo_orders:
        await publish_demo_stock(kafka_local.connection(WAREHOUSE), KeyStore.for_signer(keys_dir, WAREHOUSE).signer())
        envelopes = await publish_demo_orders(kafka_local.connection(DEMO_SERVICE), demo_orders, storefront.signer())
        emit(f"demo: the broker has all {len(envelopes)} orders")
    if trickle_every_s:
        tasks.append(
            asyncio.create_task(
                trickle_demo_orders(kafka_local.connection(DEMO_SERVICE), trickle_every_s, stop, storefront.signer)
            )
        )
    await stop.wait()
    emit("stopping: feed, services, broker")
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            emit(f"error: {type(outcome).__name__}: {outcome}")
    control.cancel()


# ---- the control channel between `fleet scale` / `fleet down` and the running `fleet up` ----------------------------
# `fleet scale` drops a request file in <state dir>/control/; the running `fleet up` takes it, scales, and writes the
# outcome beside it (<id>.done). `fleet down` sends SIGTERM to the pid in <state dir>/fleet.json.


def state_file_of(state_dir: Path) -> Path:
    return state_dir / "fleet.json"


def _control_dir(state_dir: Path) -> Path:
    return state_dir / "control"


def _running_pid(state_file: Path) -> int | None:
    from fleet.ops.status import local_fleet

    state = local_fleet(state_file)
    return int(state["pid"]) if state else None


def _clear_requests(state_dir: Path) -> None:
    for stale in _control_dir(state_dir).glob("*"):
        stale.unlink(missing_ok=True)


async def _serve_scale_requests(
    supervisor: Supervisor, state_dir: Path, emit: Callable[[str], None], stop: asyncio.Event, every_s: float = 0.3
) -> None:
    folder = _control_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    while not stop.is_set():
        for request in sorted(folder.glob("*.json")):
            try:
                wanted = json.loads(request.read_text())["scale"]
            except (OSError, ValueError, KeyError) as error:
                request.unlink(missing_ok=True)
                emit(f"ignored a bad scale request {request.name}: {error}")
                continue
            request.unlink(missing_ok=True)
            outcome: dict = {"started": [], "stopped": [], "error": None}
            try:
                for service, count in wanted.items():
                    emit(f"scaling {service} to {count}")
                    done = await supervisor.scale(service, int(count))
                    outcome["started"] += done["started"]
                    outcome["stopped"] += done["stopped"]
            except Exception as error:  # a bad count: tell the caller, keep the fleet running
                outcome["error"] = f"{type(error).__name__}: {error}"
            done_file = request.with_suffix(".done")
            done_file.with_suffix(".tmp").write_text(json.dumps(outcome))
            os.replace(done_file.with_suffix(".tmp"), done_file)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def request_scale(state_dir: Path, wanted: dict[str, int], *, timeout_s: float = 120.0) -> dict:
    """Asks the running `fleet up` to scale and waits for its answer (a stopping replica may take its grace period)."""
    if _running_pid(state_file_of(state_dir)) is None:
        raise NoFleetRunning(
            f"no local fleet is running (no live `fleet up` in {state_file_of(state_dir)}); start one with `fleet up`"
        )
    folder = _control_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}-{uuid.uuid4().hex[:6]}"
    partial = folder / f".{name}.tmp"
    partial.write_text(json.dumps({"scale": wanted}))
    os.replace(partial, folder / f"{name}.json")
    done = folder / f"{name}.done"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done.exists():
            outcome = json.loads(done.read_text())
            done.unlink(missing_ok=True)
            return outcome
        if _running_pid(state_file_of(state_dir)) is None:
            raise NoFleetRunning("the local fleet stopped before it answered")
        time.sleep(0.2)
    raise TimeoutError(f"the fleet did not answer within {timeout_s:g}s; `fleet status` shows where it is")


def stop_fleet(state_dir: Path, *, timeout_s: float = 120.0) -> int | None:
    """SIGTERM to the running `fleet up`, then waits until it has stopped its replicas and exited.

    Returns its pid; None when none runs."""
    pid = _running_pid(state_file_of(state_dir))
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _running_pid(state_file_of(state_dir)) == pid:
        time.sleep(0.2)
    if _running_pid(state_file_of(state_dir)) == pid:
        raise TimeoutError(f"fleet up (pid {pid}) did not stop within {timeout_s:g}s")
    return pid
