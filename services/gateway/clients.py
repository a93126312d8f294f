"""The gateway's I/O: the clients file (re-read when it changes) and a Kafka publisher.

The publisher connects lazily and retries."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from contextlib import suppress
from pathlib import Path
from typing import Protocol

import structlog
from pydantic import ValidationError

from contracts import REGISTRY, Record, Registry, describe_errors
from contracts.connection import KafkaConnection
from contracts.publisher import Publisher
from fleet.runtime.access import KafkaAccessDenied, authenticate

from .core import Client, Clients, hash_token

__all__ = [
    "ClientsFile",
    "ClientsFileError",
    "KafkaRecordPublisher",
    "RecordPublisher",
    "add_client",
    "describe",
    "load_clients",
    "save_clients",
]

log = structlog.get_logger("gateway")


class ClientsFileError(ValueError):
    """A clients file that cannot be used: the message says which file and why."""


def load_clients(path: Path) -> Clients:
    """The clients in `path`; no file means no clients (every request is then refused with 401)."""
    path = Path(path)
    if not path.exists():
        return Clients()
    try:
        return Clients.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise ClientsFileError(f"clients file {path} is not valid: {describe_errors(error)}") from None


def save_clients(path: Path, clients: Clients) -> None:
    """Written to a temporary file (mode 0600), then renamed: a running gateway never reads half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(clients.model_dump(mode="json"), handle, indent=2)
        handle.write("\n")
    os.replace(partial, path)


def add_client(
    path: Path, name: str, topics: list[str], *, replace: bool = False, registry: Registry = REGISTRY
) -> str:
    """Adds a client with a new random token and returns the token: the file keeps only its hash,
    so this is the one chance to see it."""
    for topic in topics:
        registry.named(topic)  # an unknown topic is an error, not a silent grant of nothing
    clients = load_clients(path)
    if clients.named(name) and not replace:
        raise ClientsFileError(f"client {name!r} already exists in {path}; use --replace to give it a new token")
    token = secrets.token_urlsafe(32)
    client = Client(name=name, token_sha256=hash_token(token), topics=tuple(dict.fromkeys(topics)))
    save_clients(path, clients.with_client(client))
    return token


class ClientsFile:
    """The clients, re-read whenever the file changes, so adding a client needs no restart.

    A file that turns invalid is logged and ignored: the gateway keeps the last valid clients rather than locking
    everyone out.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple | None = None
        self._clients = Clients()

    def current(self) -> Clients:
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            self._reload()
        return self._clients

    def _file_stamp(self) -> tuple:
        # The inode too: a rename within one mtime tick (coarse file systems) is still seen.
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return ()
        return status.st_ino, status.st_mtime_ns, status.st_size

    def _reload(self) -> None:
        if not self.path.exists():
            log.warning(
                "no_clients_file",
                path=str(self.path),
                hint="add one with `fleet gateway add-client NAME --topic TOPIC`, e.g. --topic orders.placed.v2",
            )
            self._clients = Clients()
            return
        try:
            self._clients = load_clients(self.path)
        except (ClientsFileError, OSError) as error:
            log.error("clients_file_invalid", path=str(self.path), detail=str(error))
            return
        log.info("clients_loaded", path=str(self.path), clients=len(self._clients.clients))


class RecordPublisher(Protocol):
    """What the gateway needs from a publisher: the seam where tests put an in-memory fake."""

    async def start(self) -> None: ...

    async def send(self, record: Record) -> None: ...

    async def close(self) -> None: ...


class KafkaRecordPublisher:
    """A `contracts.publisher.Publisher` (idempotent, acks=all), created on first need and again after a failed start.

    So the gateway starts while the broker is down, answers 503 meanwhile, and publishes as soon as the broker is back.
    """

    def __init__(self, bootstrap_servers: str | KafkaConnection, *, service: str, timeout_s: float) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.service = service
        self.timeout_s = timeout_s
        self._publisher: Publisher | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Connects now if it can; if not, says so and leaves the retry to the first request."""
        try:
            await asyncio.wait_for(self._started(), self.timeout_s)
        except Exception as error:  # any failure: the gateway must come up anyway
            if not isinstance(error, KafkaAccessDenied):  # a refusal was logged as kafka_access_denied already
                log.warning("broker_unavailable", bootstrap_servers=str(self.bootstrap_servers), detail=describe(error))

    async def send(self, record: Record) -> None:
        """Returns once the broker has the record; raises aiokafka's KafkaError
        (or an OSError) when it cannot get there."""
        publisher = await self._started()
        await publisher.send(record)

    async def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await _stop(publisher, self.timeout_s)

    async def _started(self) -> Publisher:
        async with self._lock:
            if self._publisher is None:
                self._publisher = await self._connect()
            return self._publisher

    async def _connect(self) -> Publisher:
        if isinstance(self.bootstrap_servers, KafkaConnection):  # a wrong password is named, not "Unable to bootstrap"
            try:
                await authenticate(self.bootstrap_servers)
            except KafkaAccessDenied as denial:
                log.error("kafka_access_denied", **denial.fields())
                raise
        # The signer is unused: the gateway signs each record itself with its current key (rotation), then calls `send`.
        publisher = Publisher(
            self.bootstrap_servers,
            service=self.service,
            signer=None,  # type: ignore[arg-type]
            # Undelivered records expire about when the caller got its 503,
            # so a retried request rarely doubles an event.
            request_timeout_ms=int(self.timeout_s * 1000),
        )
        try:
            await publisher.__aenter__()
        except BaseException:  # also a cancellation by the caller's timeout: never leave a half-started producer behind
            await _stop(publisher, self.timeout_s)
            raise
        log.info("broker_connected", bootstrap_servers=str(self.bootstrap_servers))
        return publisher


async def _stop(publisher: Publisher, timeout_s: float) -> None:
    # Stopping flushes what is pending; with the broker gone that could wait forever.
    with suppress(Exception):
        await asyncio.wait_for(publisher.__aexit__(None, None, None), timeout_s)


def describe(error: BaseException) -> str:
    """One line about a failure, for logs: its type first (aiokafka's timeouts have empty messages,
    its other errors name themselves)."""
    name, text = type(error).__name__, str(error)
    return text if text.startswith(name) else f"{name}: {text}" if text else name
