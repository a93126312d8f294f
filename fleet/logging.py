"""Structured logging: structlog for our events and the standard library's (FastStream, aiokafka) in one JSON or console stream."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from typing import Any

import orjson
import structlog

from .settings import LogSettings

__all__ = ["configure_logging", "get_logger", "redact_secrets", "replica_id"]

get_logger = structlog.get_logger

# Field names whose values never reach a log line, whoever logs them (ours or a library's `extra=`).
SECRET_FIELDS = re.compile(r"(?i)(token|secret|password|passwd|authorization|api[_-]?key|private|signature|credential|bearer)")
REDACTED = "[redacted]"
BEARER = re.compile(r"Bearer\s+\S+")


def redact_secrets(_logger: Any, _method: str, event_dict: dict) -> dict:
    """A structlog processor: values of secret-looking fields become "[redacted]", and a bearer token inside any text too."""
    for name, value in event_dict.items():
        if name != "event" and SECRET_FIELDS.search(name):
            event_dict[name] = REDACTED
        elif isinstance(value, str) and "Bearer " in value:
            event_dict[name] = BEARER.sub("Bearer " + REDACTED, value)
    return event_dict


_SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
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


def configure_logging(service: str, settings: LogSettings | None = None) -> None:
    """One pipeline for every log line of the process; `service` is bound to all of them."""
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
    structlog.configure(
        # filter_by_level first: a line below the level costs a level check, not a trip through every processor.
        processors=[structlog.stdlib.filter_by_level, *_SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service, replica=replica_id())


def replica_id() -> str:
    """`FLEET_REPLICA_ID` (the supervisor sets `<service>-<n>`; Kubernetes can pass the pod name), else host and pid."""
    return os.environ.get("FLEET_REPLICA_ID") or f"{socket.gethostname()}-{os.getpid()}"
