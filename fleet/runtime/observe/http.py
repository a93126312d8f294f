"""Each Kafka worker's small HTTP port: GET /metrics for Prometheus, GET /health/live and /health/ready for probes, and
GET /docs/asyncapi for the worker's own AsyncAPI document (JSON; YAML with ?format=yaml or Accept: application/yaml)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream import FastStream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.runtime.adapters import fetched_position
from fleet.runtime.observe.health import Verdict, WorkSince, liveness, readiness
from fleet.runtime.settings import WorkerSettings

if TYPE_CHECKING:
    from fleet.runtime.broker import FleetBroker

__all__ = ["PartitionLag", "WorkerHttp", "attach_http", "lag_of", "partition_lags"]

log = structlog.get_logger("fleet.http")
PING_TIMEOUT_S = 2.0  # how long a probe waits for the broker to answer a metadata request
BACKLOG_TIMEOUT_S = 2.0  # how long /metrics waits for the store to count the outbox backlog


@dataclass(frozen=True)
class PartitionLag:
    """One assigned partition of one subscriber's consumer;
    `lag` is None until both its position and highwater are known."""

    topic: str
    partition: int
    group: str
    lag: int | None
    main: bool  # a subscriber of the service's own topics, not a retry tier


def partition_lags(broker: Any) -> list[PartitionLag]:
    """The lag of every partition assigned to this replica, read from what its consumers already know (no request sent).
    `broker` is a FleetBroker: its `subscriptions` say which subscriber is a retry tier's."""
    lags = []
    for subscription in broker.subscriptions:
        consumer = subscription.consumer
        if not isinstance(consumer, AIOKafkaConsumer):  # not started, or FastStream's in-memory test broker
            continue
        group = getattr(subscription.subscriber, "group_id", None) or ""
        for tp in sorted(consumer.assignment()):
            handled_to = subscription.unhandled.get((tp.topic, tp.partition))  # a batch in hand: not yet handled
            lags.append(
                PartitionLag(tp.topic, tp.partition, group, lag_of(consumer, tp, handled_to), subscription.main)
            )
    return lags


def lag_of(consumer: AIOKafkaConsumer, tp: TopicPartition, handled_to: int | None = None) -> int | None:
    """Highwater minus the next record to handle (`handled_to`, while a batch is in hand; else the consumer's position),
    without waiting: None until both are known (or once the partition is revoked)."""
    highwater = consumer.highwater(tp) if tp in consumer.assignment() else None
    position = fetched_position(consumer, tp) if handled_to is None else handled_to
    if highwater is None or position is None:
        return None
    return max(0, highwater - position)


def _paused_text(held: Any) -> str | None:
    """How an operator holds the worker, for its readiness answer; None when nothing is held."""
    if not held.is_paused:
        return None
    by = f" by {held.paused_by}" if held.paused_by else ""
    why = f": {held.reason}" if held.reason else ""
    return f"paused ({held.what}){by}{why}; `fleet resume {held.service}` lets it go on"


def _unassigned(broker: Any) -> list[str]:
    """The main subscribers that have no partition, named by group and topics."""
    missing = []
    for subscription in broker.subscriptions:
        consumer = subscription.consumer
        if subscription.main and not (isinstance(consumer, AIOKafkaConsumer) and consumer.assignment()):
            topics = ", ".join(getattr(subscription.subscriber, "topic_names_for_subscribe", None) or ())
            missing.append(f"{subscription.policy.group or '-'} ({topics})")
    return missing


class WorkerHttp:
    """The worker's probe and metrics port, served by uvicorn inside the worker's own event loop."""

    def __init__(
        self, broker: FleetBroker, settings: WorkerSettings, state: Any = None, app: FastStream | None = None
    ) -> None:
        self.broker = broker
        self.app = app  # the worker's FastStream app: its specification is the AsyncAPI document it serves
        self.settings = settings
        self.state = (
            state  # a fleet.runtime.stateful.StateHandle, for the outbox backlog; None for a worker without a store
        )
        self.worker = broker.state  # fleet.runtime.delivery.outcomes.WorkerState: metrics, progress, stopping
        self.work = WorkSince()
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._loop_task: asyncio.Task | None = None
        self._exit = asyncio.Event()
        self._asyncapi: dict[str, bytes] | None = (
            None  # this service's document as JSON and YAML, made on first request
        )
        self._asyncapi_lock = asyncio.Lock()

    # ---- the decisions -------------------------------------------------------------------------------

    async def live(self) -> Verdict:
        progress = self.worker.progress
        now = progress.clock()
        lag = sum(p.lag or 0 for p in partition_lags(self.broker) if p.main)
        facts = dict(
            now=now,
            bound_s=self.settings.liveness_bound_s,
            oldest_in_flight_s=progress.oldest_in_flight_s(),
            last_progress=progress.last_progress,
            lag=lag,
            work_since=self.work.observe(lag, now),
            paused=self.broker.hold.held.is_paused,
        )
        verdict = liveness(**facts)
        if verdict.reason == "no_progress":  # the only case that asks the broker: is the wait its fault?
            verdict = liveness(**facts, broker_reachable=await self._broker_answers())
        return verdict

    async def ready(self) -> Verdict:
        stopping = bool(getattr(self.worker, "stopping", False))
        main = [p for p in partition_lags(self.broker) if p.main]
        return readiness(
            stopping=stopping,
            connected=not stopping and await self._broker_answers(),
            unassigned=_unassigned(self.broker),
            lag=sum(p.lag or 0 for p in main),
            unknown=[f"{p.topic}/{p.partition}" for p in main if p.lag is None],
            threshold=self.settings.readiness_lag_threshold,
            paused=_paused_text(self.broker.hold.held),
        )

    async def metrics_text(self) -> bytes:
        metrics, progress = self.worker.metrics, self.worker.progress
        backlog = await self._backlog()
        # No await from here on, so two scrapes at once never see each other's half-cleared lag series.
        metrics.outbox_backlog.set(backlog)
        metrics.lag.clear()  # revoked partitions disappear
        for p in partition_lags(self.broker):
            if p.lag is not None:
                metrics.lag.labels(p.topic, str(p.partition), p.group).set(p.lag)
        for topic in self.broker.hold.registry.consumed_in_group_by(self.broker.service):
            metrics.paused.labels(topic.name).set(1 if self.broker.hold.held.pauses(topic.name) else 0)
        metrics.oldest_in_flight.set(progress.oldest_in_flight_s())
        metrics.since_progress.set(progress.clock() - progress.last_progress)
        return generate_latest(metrics.registry)

    async def _broker_answers(self) -> bool:
        try:
            return bool(await self.broker.ping(timeout=PING_TIMEOUT_S))
        except Exception:
            return False

    async def _backlog(self) -> float:
        if self.state is None:
            return math.nan
        try:
            return float(await asyncio.wait_for(self.state.store.backlog(), BACKLOG_TIMEOUT_S))
        except Exception as error:  # store not open yet, closed, or busy past the timeout: unknown, not zero
            log.debug("outbox_backlog_unknown", error_class=type(error).__name__)
            return math.nan

    async def asyncapi_document(self) -> dict[str, bytes]:
        """This worker's AsyncAPI document as {"json": ..., "yaml": ...}: from its own app's FastStream specification
        and the registry (fleet.runtime.asyncapi), the same as `fleet docs gen --service`; made once, on the first
        request and in a thread, never at import. Raises LookupError for a worker the document does not know."""
        async with self._asyncapi_lock:
            if self._asyncapi is None:
                if self.app is None:
                    raise LookupError("this worker's HTTP port was started without its app: no AsyncAPI document")
                service = str(getattr(self.broker, "service", ""))
                self._asyncapi = await asyncio.to_thread(_asyncapi_bodies, service, self.app)
            return self._asyncapi

    # ---- HTTP ----------------------------------------------------------------------------------------

    def asgi(self) -> Starlette:
        async def metrics(request: Request) -> Response:
            return Response(await self.metrics_text(), media_type=CONTENT_TYPE_LATEST)

        async def live(request: Request) -> Response:
            return _answer(await self.live())

        async def ready(request: Request) -> Response:
            return _answer(await self.ready())

        async def asyncapi(request: Request) -> Response:
            wanted = request.query_params.get("format") or (
                "yaml" if "yaml" in request.headers.get("accept", "") else "json"
            )
            if wanted not in ("json", "yaml"):
                return JSONResponse(
                    {"reason": "unknown_format", "detail": "format is json (default) or yaml"}, status_code=400
                )
            try:
                bodies = await self.asyncapi_document()
            except LookupError as error:  # fleet.runtime.asyncapi.UnknownService: a worker the document does not know
                return JSONResponse({"reason": "unknown_service", "detail": str(error)}, status_code=404)
            return Response(bodies[wanted], media_type=ASYNCAPI_MEDIA_TYPES[wanted])

        return Starlette(
            routes=[
                Route("/metrics", metrics),
                Route("/health/live", live),
                Route("/health/ready", ready),
                Route("/docs/asyncapi", asyncapi),
            ]
        )

    async def start(self) -> None:
        self._socket = _bind(self.settings.http_host, self.settings.http_port)
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.asgi(), log_config=None, access_log=False, lifespan="off", ws="none", timeout_graceful_shutdown=2
        )
        config.load()
        self._server = uvicorn.Server(config)
        # Server.serve() would take over SIGINT and SIGTERM, which belong to FastStream: run its parts instead.
        self._server.lifespan = config.lifespan_class(config)
        try:
            await self._server.startup(sockets=[self._socket])
        except BaseException:
            self._socket.close()
            self._server = self._socket = None
            raise
        self._exit = asyncio.Event()
        self._loop_task = asyncio.create_task(self._tick(), name=f"{getattr(self.broker, 'service', 'worker')}-http")
        log.info(
            "worker_http_started",
            host=self.settings.http_host,
            port=self.port,
            endpoints=["/metrics", "/health/live", "/health/ready", "/docs/asyncapi"],
        )

    async def _tick(self) -> None:
        """uvicorn's own main loop wakes ten times a second to refresh its Date header and look for a stop; an idle
        worker's port only needs the Date header once a second, and a stop is an event."""
        server = self._server
        assert server is not None
        while not await server.on_tick(0):  # counter 0: the once-a-second work (the Date header)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 1.0)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        self._exit.set()
        if self._loop_task is not None:
            await self._loop_task
        await self._server.shutdown(sockets=[self._socket] if self._socket else None)
        self._server, self._socket, self._loop_task = None, None, None
        log.info("worker_http_stopped", port=self.port)


ASYNCAPI_MEDIA_TYPES = {"json": "application/json", "yaml": "application/yaml"}


def _asyncapi_bodies(service: str, app: FastStream) -> dict[str, bytes]:
    import json

    from fleet.runtime.asyncapi import WorkerSpec, render, service_document

    document = service_document(service, [WorkerSpec.of(service, app)])
    return {
        "json": json.dumps(document, ensure_ascii=False, sort_keys=True).encode(),
        "yaml": render(document).encode(),
    }


def _answer(verdict: Verdict) -> JSONResponse:
    return JSONResponse(verdict.body(), status_code=200 if verdict.ok else 503)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port. A busy port (a second replica on one host, scaled with `fleet run`) falls back
    to a free one, with a warning naming it: in a container each replica has its own port space."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]

    def listen_on(where: tuple) -> socket.socket:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
            # Two replicas starting together may both bind (SO_REUSEADDR), but only one can listen:
            # so listen here, not later.
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    try:
        return listen_on(address)
    except OSError as error:
        if error.errno != errno.EADDRINUSE or port == 0:
            raise
    sock = listen_on((address[0], 0, *address[2:]))
    log.warning("worker_http_port_busy", host=host, wanted_port=port, port=sock.getsockname()[1])
    return sock


def attach_http(app: FastStream, broker: FleetBroker, settings: WorkerSettings, state: Any = None) -> WorkerHttp:
    """Serves the worker's /metrics and /health from its own event loop: the port opens before the broker connects (so
    liveness answers while Kafka is slow), and closes after the broker has stopped. `state` is the StateHandle from
    `attach_store`, for the outbox backlog. Also `broker.worker_http`."""
    http = WorkerHttp(broker, settings, state, app)

    async def open_port() -> None:
        await http.start()

    async def close_port() -> None:
        await http.stop()

    app.on_startup(open_port)
    app.after_shutdown(close_port)
    broker.worker_http = http
    return http
