"""The whole local fleet in one command: broker, topics, services, and optionally a demo feed shown as it flows."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Callable

import structlog

from services import SERVICES

from . import kafka_local
from .demo import DEMO_SERVICE, WAREHOUSE, publish_demo_orders, publish_demo_stock, trickle_demo_orders
from .keys import UPSTREAM_SIGNERS, KeyStore, init_keys
from .settings import KeySettings
from .supervisor import Supervisor
from .topics import apply_topics
from .watch import watch_events

__all__ = ["run_fleet"]

log = structlog.get_logger("fleet.up")


async def run_fleet(
    services: list[str],
    *,
    state_dir: Path,
    emit: Callable[[str], None],
    demo_orders: int = 0,
    trickle_every_s: float = 0.0,
) -> None:
    """Runs until SIGINT/SIGTERM, then stops the feed, the services and (if it started it) the broker."""
    keys_dir = KeySettings().dir
    for kid in init_keys(keys_dir, [*SERVICES, *UPSTREAM_SIGNERS]):
        emit(f"created dev key {kid} in {keys_dir}")
    storefront = KeyStore.for_signer(keys_dir, DEMO_SERVICE)
    started_broker = not kafka_local.status().ready
    emit(kafka_local.start())
    bootstrap = kafka_local.bootstrap_servers()
    for change in await apply_topics(bootstrap):
        emit(f"topic {change}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    supervisor = Supervisor(services, state_dir=state_dir)
    await supervisor.start()
    emit(f"fleet up: {', '.join(services)}; logs in {state_dir / 'logs'}; Ctrl-C stops everything")
    watching = asyncio.Event()
    tasks = [asyncio.create_task(watch_events(bootstrap, emit, stop, ready=watching))]
    await asyncio.wait([tasks[0], asyncio.create_task(watching.wait())], return_when=asyncio.FIRST_COMPLETED)
    if demo_orders:
        await publish_demo_stock(bootstrap, KeyStore.for_signer(keys_dir, WAREHOUSE).signer())
        envelopes = await publish_demo_orders(bootstrap, demo_orders, storefront.signer())
        emit(f"demo: the broker has all {len(envelopes)} orders")
    if trickle_every_s:
        tasks.append(asyncio.create_task(trickle_demo_orders(bootstrap, trickle_every_s, stop, storefront.signer)))
    await stop.wait()
    emit("stopping: feed, services, broker")
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            emit(f"error: {type(outcome).__name__}: {outcome}")
    await supervisor.stop()
    if started_broker:
        emit(kafka_local.stop())
