"""Structured logging: structlog for our events and the standard library's (FastStream, aiokafka) in one stream.

The stream is JSON or console text."""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import re
import socket
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, Processor

from fleet.runtime.settings import LogSettings

__all__ = [
    "configure_logging",
    "decided",
    "event_context",
    "get_logger",
    "merge_event_context",
    "note",
    "redact_secrets",
    "replica_id",
]

get_logger = structlog.get_logger

# Field names whose values never reach a log line, whoever logs them (ours or a library's `extra=`).
SECRET_FIELDS = re.compile(
    r"(?i)(token|secret|password|passwd|authorization|api[_-]?key|private|signature|credential|bearer)"
)
REDACTED = "[redacted]"
BEARER = re.compile(r"Bearer\s+\S+")


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    # Field names repeat on every line: the regex runs once per name, not once per name per line.
    return name != "event" and bool(SECRET_FIELDS.search(name))


def redact_secrets(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: values of secret-looking fields become "[redacted]",
    and a bearer token inside any text too."""
    for name, value in event_dict.items():
        if _is_secret_name(name):
            event_dict[name] = REDACTED
        elif isinstance(value, str) and "Bearer " in value:
            event_dict[name] = BEARER.sub("Bearer " + REDACTED, value)
    return event_dict


# The context of the event being handled (its ids, then whatever its handler notes): one dict per event, in one
# context variable. structlog's own contextvars keep one variable per field and copy the whole context to merge them on
# each line; this is one lookup.
_EVENT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("fleet_log_event", default=None)
# What every line of the process carries: its service and replica, set once by configure_logging.
_PROCESS: dict[str, Any] = {}


class event_context:  # lower case: callers use it as the function it was, `with event_context(**fields):`
    """Binds an event's fields to every line written while it is handled (this task only); `note` adds to them.
    A class, not a generator: it is entered once per event."""

    __slots__ = ("_token", "fields")

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def __enter__(self) -> dict[str, Any]:
        self._token = _EVENT.set(self.fields)
        return self.fields

    def __exit__(self, *exc_info: object) -> None:
        _EVENT.reset(self._token)


def note(**fields: Any) -> bool:
    """Adds fields to the line of the event being handled (`event_handled`, one per event) and to any later line of it:
    how a handler says what it decided without a line of its own. False outside a handled event (nothing noted)."""
    current = _EVENT.get()
    if current is None:
        return False
    current.update(fields)
    return True


def decided(event: str, **fields: Any) -> None:
    """What a handler decided, e.g. `decided("payment_decided", order_id=..., outcome=...)`: on the event's one line
    (`event_handled ... decided=payment_decided outcome=...`), or as a line of its own outside a handled event."""
    if not note(decided=event, **fields):
        structlog.get_logger("fleet.events").info(event, **fields)


def merge_event_context(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: the process's and the current event's fields, under what the line itself says."""
    current = _EVENT.get()
    if current:
        for name, value in current.items():
            event_dict.setdefault(name, value)
    for name, value in _PROCESS.items():
        event_dict.setdefault(name, value)
    return event_dict


_SHARED_PROCESSORS: list[Processor] = [
    merge_event_context,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    redact_secrets,
]


def _renderer(fmt: str):
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    if console:
        return structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    return structlog.processors.JSONRenderer(serializer=lambda obj, **_: orjson.dumps(obj, default=str).decode())


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's plain writer with the name it was asked for, so `add_logger_name` can say which logger wrote."""

    def __init__(self, name: str, file: Any) -> None:
        super().__init__(file)
        self.name = name


def configure_logging(service: str, settings: LogSettings | None = None) -> None:
    """One stream for every log line of the process; `service` is bound to all of them.

    Our own events go from structlog straight to stdout, one rendered line each: through the standard library's
    logging (a LogRecord, a handler, a formatter) a line cost about 25x as much, on the per-event path. The libraries'
    lines (FastStream, aiokafka) still take that path, rendered by the same processors into the same stream."""
    settings = settings or LogSettings()
    renderer = _renderer(settings.format)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED_PROCESSORS,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # aiokafka logs every rebalance step at INFO; keep its warnings and errors.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    stdout = sys.stdout
    structlog.configure(
        processors=[*_SHARED_PROCESSORS, structlog.processors.format_exc_info, renderer],
        logger_factory=lambda *args: _NamedWriteLogger(str(args[0]) if args else "", stdout),
        # Below the level a call returns at once: no processor runs for a debug line.
        wrapper_class=structlog.make_filtering_bound_logger(root.level),
        cache_logger_on_first_use=True,
    )
    _PROCESS.clear()
    _PROCESS.update(service=service, replica=replica_id())


def replica_id() -> str:
    """`FLEET_REPLICA_ID` (the supervisor sets `<service>-<n>`; Kubernetes can pass the pod name), else host and pid."""
    return os.environ.get("FLEET_REPLICA_ID") or f"{socket.gethostname()}-{os.getpid()}"
