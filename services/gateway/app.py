"""The gateway's FastAPI shell: takes events over HTTP from upstream systems and publishes them signed.

It also answers orders' status from the tracker's read model."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Awaitable, Callable

import psycopg
import structlog
import uvicorn
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from contracts import REGISTRY, PrivateKey, Record, SigningKeyError, Topic, TrustedKey, encode, source_of
from fleet.runtime.access import KafkaAccessDenied
from fleet.runtime.keys import KeyStore, topics_signed_by
from fleet.runtime.store import Store, open_store

from . import core
from .clients import ClientsFile, KafkaRecordPublisher, RecordPublisher, describe
from .settings import GatewaySettings

__all__ = ["SERVICE", "OrderStatusQuery", "ReadModelUnavailable", "TrackerReadModel", "create_app", "serve"]

SERVICE = "gateway"
log = structlog.get_logger(SERVICE)

# What a broker that is down or slow raises: aiokafka's errors, and TimeoutError / ConnectionError (both OSErrors).
BROKER_ERRORS = (KafkaError, OSError)
# What a read model that is missing, down or not migrated yet raises (ValueError: a store URL of no known kind).
STORE_ERRORS = (sqlite3.Error, psycopg.Error, OSError, ValueError)

# The seam for the order endpoint: the order's answer, or None when the tracker has not seen it; raises
# ReadModelUnavailable when it cannot tell. Tests pass an in-memory fake.
OrderStatusQuery = Callable[[str], Awaitable[dict[str, Any] | None]]
# How an order is read from the tracker's store: the tracker's own query. The gateway imports no other service; whoever
# builds it (fleet.catalog) hands it over.
ReadModelQuery = Callable[[Store, str], Awaitable[dict[str, Any] | None]]


class Unavailable(core.Refused):
    """The gateway cannot publish right now (broker unreachable, no signing key): the caller should retry later."""

    status = 503


class ReadModelUnavailable(Exception):
    """The tracker's read model cannot be read now (not created yet, or its database is down):
    the caller should retry later."""


class TrackerReadModel:
    """The tracker's store, opened on the first read and again after a failed open, so the gateway starts without it."""

    def __init__(self, url: str, query: ReadModelQuery) -> None:
        self.url = url
        self.query = query
        self._store: Store | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, order_id: str) -> dict[str, Any] | None:
        store = await self._opened()
        try:
            return await self.query(store, order_id)
        except STORE_ERRORS as error:
            raise ReadModelUnavailable(describe(error)) from error

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    async def _opened(self) -> Store:
        async with self._lock:
            if self._store is None:
                if _missing_sqlite_file(self.url):
                    # Opening it would create an empty file in the tracker's place, with none of its tables.
                    raise ReadModelUnavailable(f"no read model at {self.url}: the tracker has not run yet")
                try:
                    self._store = await open_store(self.url)
                except STORE_ERRORS as error:
                    raise ReadModelUnavailable(describe(error)) from error
            return self._store


def _missing_sqlite_file(url: str) -> bool:
    return url.startswith("sqlite:///") and not os.path.exists(url.removeprefix("sqlite:///"))


class RequestRefused(Exception):
    """Carries a core refusal out of the handler to the one place that answers and logs it."""

    def __init__(self, refused: core.Refused) -> None:
        super().__init__(refused.detail)
        self.refused = refused


class Accepted(BaseModel):
    """The broker has the event."""

    event_id: str = Field(description="The event's id (UUIDv7), its `ce_id` on the wire.")
    correlation_id: str = Field(description="The flow it belongs to: the X-Correlation-Id sent, or else the event id.")
    topic: str = Field(description="The topic it was published to.")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where in the body (or `header`, `X-Correlation-Id`).")
    msg: str


class Refusal(BaseModel):
    """Why the event was not accepted."""

    reason: str = Field(
        description="A stable code, e.g. `unknown_token`, `topic_not_allowed`, `body_too_large`, `broker_unavailable`."
    )
    detail: str
    errors: list[FieldError] | None = Field(None, description="Every field error (422 only).")


class HistoryItem(BaseModel):
    """One event of the order's flow that the tracker folded."""

    event_type: str = Field(description="Its CloudEvents type, e.g. `dev.eventfleet.payments.authorized.v1`.")
    event_id: str = Field(description="Its `ce_id`.")
    time: str = Field(description="Its `ce_time` (RFC 3339, UTC).")
    source: str = Field(description="Who emitted it, e.g. `/eventfleet/payments`.")


class OrderView(BaseModel):
    """An order as the tracker has seen it so far."""

    order_id: str
    status: str = Field(
        description="How far it got: `placed`, `payment_authorized`, `payment_declined`, `reserved`, "
        "`backordered` or `shipment_scheduled`."
    )
    correlation_id: str = Field(description="The flow it belongs to.")
    customer_id: str
    history: list[HistoryItem] = Field(description="Every event of its flow, in time order, each once.")


ORDER_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": Refusal,
        "description": "No token, or a token the gateway does not know (`WWW-Authenticate: Bearer`).",
    },
    404: {"model": Refusal, "description": "`unknown_order`: the tracker has not seen this order (yet)."},
    503: {"model": Refusal, "description": "`read_model_unavailable`: the tracker's store cannot be read now; retry."},
}

REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": Refusal,
        "description": "No token, or a token the gateway does not know (`WWW-Authenticate: Bearer`).",
    },
    403: {
        "model": Refusal,
        "description": "The client may not publish to this topic, or the gateway's key may not sign it.",
    },
    404: {"model": Refusal, "description": "The registry has no such topic."},
    410: {
        "model": Refusal,
        "description": "`topic_retired`: the topic is closed for writing or retired; the detail names the version to "
        "publish instead.",
    },
    413: {"model": Refusal, "description": "The body is larger than the topic's limit."},
    422: {
        "model": Refusal,
        "description": "The body is not a valid event for the topic; `errors` lists every field error.",
    },
    503: {
        "model": Refusal,
        "description": "The broker is unreachable or did not confirm in time: the event may not be published; retry.",
    },
}


def create_app(
    settings: GatewaySettings | None = None,
    publisher: RecordPublisher | None = None,
    order_status: OrderStatusQuery | None = None,
    *,
    read_model: ReadModelQuery | None = None,
) -> FastAPI:
    """The gateway. `read_model` reads an order from the tracker's store (`GATEWAY_TRACKER_STORE_URL`); `publisher`
    replaces the Kafka publisher and `order_status` the whole read side (tests pass in-memory fakes). Without either
    of the last two, GET /v1/orders/{id} answers 503. The lifespan starts the publisher and closes what it built."""
    settings = settings or GatewaySettings()
    clients = ClientsFile(settings.clients_file)
    keys = KeyStore.for_signer(settings.keys.dir, SERVICE, check_every_s=settings.keys.reload_every_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.publisher = publisher or KafkaRecordPublisher(
            settings.kafka.connection(SERVICE), service=SERVICE, timeout_s=settings.publish_timeout_s
        )
        tracker = (
            None if order_status or read_model is None else TrackerReadModel(settings.tracker_store_url, read_model)
        )
        app.state.order_status = order_status or tracker
        await app.state.publisher.start()
        clients.current()  # read now, so a missing or invalid clients file shows in the startup log
        log.info("gateway_started", clients_file=str(settings.clients_file))
        try:
            yield
        finally:
            await app.state.publisher.close()
            if tracker is not None:
                await tracker.close()

    app = FastAPI(
        title="eventfleet gateway",
        description="HTTP ingress for upstream systems that do not speak Kafka: each event is validated, "
        "signed and published.",
        lifespan=lifespan,
    )
    # FastAPI's decorator form: add_exception_handler's type wants a handler of any Exception, this one takes its own.
    app.exception_handler(RequestRefused)(_answer_refusal)

    @app.get("/health", summary="Is the gateway up? (It says nothing about the broker.)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/events/{topic}",
        status_code=202,
        response_model=Accepted,
        responses=REFUSALS,
        summary="Publish one event",
        openapi_extra=_operation_doc(),
    )
    async def post_event(
        request: Request,
        topic: str = Path(
            description="A registry topic the client may publish to: the newest version of its event "
            "(orders.placed.v2), or an older one while it is not retired.",
            examples=_example_topics(),
        ),
    ) -> Accepted:
        """Send `Authorization: Bearer <token>`, and optionally `X-Correlation-Id`; the body is the event as JSON, e.g.
        an OrderPlacedV2 to `/v1/events/orders.placed.v2`."""
        allowed = _admit(core.authorize(clients.current(), request.headers.get("authorization"), topic))
        request.state.client = allowed.client.name
        signer, trusted = _gateway_key(keys)
        _admit(core.gateway_may_sign(trusted, allowed.topic))
        _admit(core.size_refusal(core.declared_size(request.headers.get("content-length")), allowed.topic))
        body = await _read_body(request, allowed.topic)
        # Absent: a new flow. Present, it must be 1 to 200 printable characters, as the OpenAPI document says: an empty
        # header is refused (422), never read as absent.
        correlation_id = request.headers.get("x-correlation-id")
        event = _admit(core.parse_event(allowed.topic, body, correlation_id))
        record = encode(event, source=source_of(SERVICE), signer=signer, correlation_id=correlation_id)
        await _publish(request, record, settings.publish_timeout_s)
        log.info(
            "event_accepted",
            topic=record.topic,
            client=allowed.client.name,
            event_id=record.envelope.id,
            correlation_id=record.envelope.correlation_id,
            key=record.key,
        )
        return Accepted(event_id=record.envelope.id, correlation_id=record.envelope.correlation_id, topic=record.topic)

    @app.get(
        "/v1/orders/{order_id}",
        response_model=OrderView,
        responses=ORDER_REFUSALS,
        summary="An order's status and history, as the tracker has seen them",
        openapi_extra={"security": [{"bearer": []}]},
    )
    async def get_order(
        request: Request, order_id: str = Path(description="The order's id.", examples=["ord-7f3a9c"])
    ) -> OrderView:
        """Send `Authorization: Bearer <token>`: any client may read any order. The tracker lags the flow by moments."""
        client = _admit(core.authenticate(clients.current(), request.headers.get("authorization")))
        request.state.client = client.name
        answer = await _read_order(request, order_id)
        if answer is None:
            raise RequestRefused(core.NotFound("unknown_order", f"the tracker has not seen order {order_id}"))
        log.info("order_status_served", order_id=order_id, status=answer["status"], client=client.name)
        return OrderView.model_validate(answer)

    _document_event_schemas(app)
    return app


def serve(settings: GatewaySettings | None = None, *, read_model: ReadModelQuery | None = None) -> None:
    """Runs the gateway under uvicorn until SIGTERM or Ctrl-C;
    uvicorn's logs go through the fleet's structlog pipeline."""
    settings = settings or GatewaySettings()
    app = create_app(settings, read_model=read_model)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None))
    with _stop_signals_exit_cleanly():
        server.run()


@contextmanager
def _stop_signals_exit_cleanly():
    """uvicorn stops gracefully on SIGTERM or SIGINT, then raises the signal again for the handler it found before.

    That handler ends the process with status 0, so the gateway stops like the Kafka workers do
    (not killed by the signal).
    """
    previous = {sig: signal.signal(sig, _exit_cleanly) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _admit(outcome):
    """The outcome itself, unless the core refused: then the request ends here."""
    if isinstance(outcome, core.Refused):
        raise RequestRefused(outcome)
    return outcome


def _gateway_key(keys: KeyStore) -> tuple[PrivateKey, TrustedKey | None]:
    """The key to sign with now (re-read from disk when it changes,
    so a rotation needs no restart) and its keyring entry."""
    try:
        signer = keys.signer()
        return signer, keys.keyring().get(signer.kid)
    except SigningKeyError as error:
        log.error("no_signing_key", detail=str(error))
        raise RequestRefused(Unavailable("no_signing_key", "the gateway has no usable signing key")) from None


async def _read_body(request: Request, topic: Topic) -> bytes:
    """The body, read no further than the topic's limit:
    a chunked or lying request cannot make the gateway buffer more."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        _admit(core.size_refusal(len(body), topic))
    return bytes(body)


async def _publish(request: Request, record: Record, timeout_s: float) -> None:
    publisher = getattr(request.app.state, "publisher", None)
    if publisher is None:
        raise RequestRefused(Unavailable("not_started", "the gateway is not started"))
    try:
        await asyncio.wait_for(publisher.send(record), timeout_s)
    except KafkaAccessDenied:  # logged as kafka_access_denied by the publisher
        raise RequestRefused(
            Unavailable("broker_refused", "the broker refused the gateway's credentials; operators see why in its log")
        ) from None
    except BROKER_ERRORS as error:
        log.error("publish_failed", topic=record.topic, event_id=record.envelope.id, detail=describe(error))
        raise RequestRefused(
            Unavailable(
                "broker_unavailable",
                "the broker did not confirm the event in time; it may not be published, retry later",
            )
        ) from None


async def _read_order(request: Request, order_id: str) -> dict[str, Any] | None:
    query = getattr(request.app.state, "order_status", None)
    if query is None:
        raise RequestRefused(Unavailable("not_started", "the gateway is not started"))
    try:
        return await query(order_id)
    except ReadModelUnavailable as error:
        log.error("read_model_unavailable", detail=str(error))
        raise RequestRefused(
            Unavailable("read_model_unavailable", "the tracker's read model cannot be read now; retry later")
        ) from None


async def _answer_refusal(request: Request, error: RequestRefused) -> JSONResponse:
    refused = error.refused
    log.warning(
        "request_refused",
        status=refused.status,
        reason=refused.reason,
        topic=request.path_params.get("topic"),
        order_id=request.path_params.get("order_id"),
        client=getattr(request.state, "client", None),
    )
    body: dict[str, Any] = {"reason": refused.reason, "detail": refused.detail}
    if isinstance(refused, core.Invalid):
        body["errors"] = list(refused.errors)
    return JSONResponse(body, status_code=refused.status, headers=_challenge(refused))


def _challenge(refused: core.Refused) -> dict[str, str]:
    """RFC 6750: a 401 names the scheme, and says `invalid_token` when a token was sent but is not valid."""
    if not isinstance(refused, core.Unauthorized):
        return {}
    return {"WWW-Authenticate": 'Bearer error="invalid_token"' if refused.reason == "unknown_token" else "Bearer"}


def _example_topics() -> list[str]:
    """The topics the gateway may sign, the newest version of each event first (what a client should publish now:
    orders.placed.v2), then the older ones not retired yet."""
    topics = [REGISTRY.named(name) for name in topics_signed_by(SERVICE)]
    return [t.name for t in sorted(topics, key=REGISTRY.is_superseded) if not t.retired]


def _gateway_models() -> list:
    return [REGISTRY.named(name).model for name in topics_signed_by(SERVICE)]


def _operation_doc() -> dict:
    """What the handler reads by hand, for the docs: the X-Correlation-Id header, and a body that is one of the events
    the gateway may sign (the path's topic says which)."""
    refs = [{"$ref": f"#/components/schemas/{model.__name__}"} for model in _gateway_models()]
    correlation = {
        "name": "X-Correlation-Id",
        "in": "header",
        "required": False,
        "description": "The flow this event belongs to (default: a new flow, named by the event id).",
        "schema": {"type": "string", "minLength": 1, "maxLength": core.MAX_CORRELATION_ID},
    }
    body = {"required": True, "content": {"application/json": {"schema": {"oneOf": refs}}}}
    return {"parameters": [correlation], "requestBody": body, "security": [{"bearer": []}]}


def _document_event_schemas(app: FastAPI) -> None:
    """Adds the events' JSON Schemas and the bearer scheme to the OpenAPI document: the handler reads both by hand,
    so FastAPI cannot know them."""
    _, schemas = models_json_schema(
        [(m, "validation") for m in _gateway_models()], ref_template="#/components/schemas/{model}"
    )
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = default_openapi()  # which FastAPI keeps as app.openapi_schema: completed once
        components = document.setdefault("components", {})
        components.setdefault("schemas", {}).update(schemas.get("$defs", {}))
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The client's token from `fleet gateway add-client`.",
            }
        }
        return document

    app.openapi = openapi  # type: ignore[method-assign]
