"""The one module that knows the services: which exist, how each one's app is built, its settings, and its wiring.

Everything above it (operator tools, docs, the CLI) asks here; nothing below it (the runtime, the services themselves)
knows which services there are. A new service is its folder under `services/` plus one line in `CATALOG`.
Services are imported lazily, so `fleet --help` does not import FastStream, FastAPI and every service.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import tempfile
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from contracts import REGISTRY, Registry
from fleet.runtime.keys import UPSTREAM_SIGNERS, init_keys
from fleet.runtime.settings import KeySettings

if typing.TYPE_CHECKING:  # the runtime's store comes with it: `fleet --help` need not import it
    from fleet.runtime.read_model import ReadModel

__all__ = [
    "CATALOG",
    "HTTP_SERVICES",
    "WORKERS",
    "NotRebuildable",
    "Rebuildable",
    "ServiceEntry",
    "UnknownService",
    "Wiring",
    "create_app",
    "entry_of",
    "group_of",
    "http_port_of",
    "inspect_app",
    "rebuildable",
    "run_http_service",
    "service_wiring",
    "settings_class",
    "throwaway_keys",
]


@dataclass(frozen=True)
class ServiceEntry:
    """One service: its name, the package that holds it, and whether it is a Kafka worker or an HTTP service."""

    name: str
    package: str  # e.g. services.payments: exports create_app and its settings class
    settings: str  # the settings class's name in that package, e.g. PaymentsSettings
    kind: str = "worker"  # "worker": a consumer group, run by `fleet up`; "http": served by uvicorn, consumes nothing
    # What a worker's store holds, for `fleet rebuild`: either a read model (the package exports READ_MODEL, a fold of
    # its topics that can be built again from them), or effects, said in words: what it did that a rebuild would not do
    # again, so it refuses.
    read_model: bool = False
    effects: str = ""


# The registry of services: one line each.
CATALOG: tuple[ServiceEntry, ...] = (
    ServiceEntry("payments", "services.payments", "PaymentsSettings", effects="the payments it authorized or declined"),
    ServiceEntry("inventory", "services.inventory", "InventorySettings", effects="the stock it reserved"),
    ServiceEntry("shipping", "services.shipping", "ShippingSettings", effects="the shipments it booked"),
    ServiceEntry(
        "notifications", "services.notifications", "NotificationsSettings", effects="the notifications it sent"
    ),
    ServiceEntry("tracker", "services.tracker", "TrackerSettings", read_model=True),
    ServiceEntry("gateway", "services.gateway", "GatewaySettings", kind="http"),
)
WORKERS: tuple[str, ...] = tuple(entry.name for entry in CATALOG if entry.kind == "worker")
HTTP_SERVICES: tuple[str, ...] = tuple(entry.name for entry in CATALOG if entry.kind == "http")


class UnknownService(LookupError):
    """A service name that is not in the catalog."""


class NotRebuildable(ValueError):
    """`fleet rebuild` of a service whose state is not a read model: why, in one line."""


def entry_of(name: str) -> ServiceEntry:
    for entry in CATALOG:
        if entry.name == name:
            return entry
    raise UnknownService(
        f"unknown service {name!r}; the fleet has the workers {', '.join(WORKERS)} "
        f"and the HTTP services {', '.join(HTTP_SERVICES)}"
    )


def _package(name: str) -> ModuleType:
    return importlib.import_module(entry_of(name).package)


def settings_class(name: str) -> type[Any]:
    """The service's pydantic-settings class (its env prefix, consumer group, port and store)."""
    return typing.cast(type, getattr(_package(name), entry_of(name).settings))


def _field_default(name: str, field_name: str) -> Any:
    fields = settings_class(name).model_fields
    return fields[field_name].default if field_name in fields else None


def group_of(name: str) -> str:
    """The service's consumer group as its replicas configure it: `<SERVICE>_GROUP_ID`, else its settings' default."""
    return str(getattr(settings_class(name)(), "group_id", None) or name)


def http_port_of(name: str) -> int:
    """The service's default HTTP port (/metrics and /health for a worker): 0 when it has none."""
    return int(_field_default(name, "http_port") or 0)


def create_app(name: str, settings: Any = None) -> Any:
    """The service's app as its `create_app()` builds it: a FastStream app for a worker,
    a FastAPI app for an HTTP service."""
    if entry_of(name).kind == "http":
        return _gateway_app(settings)
    return _package(name).create_app(settings)


def _tracker_read_model() -> Callable[..., Any]:
    # The gateway answers orders from the tracker's read model; the catalog, which knows both, hands it the query.
    return typing.cast(Callable[..., Any], importlib.import_module("services.tracker.queries").order_status)


def _gateway_app(settings: Any = None) -> Any:
    return _package("gateway").create_app(settings, read_model=_tracker_read_model())


@dataclass(frozen=True)
class Rebuildable:
    """What `fleet rebuild` needs of a service whose state is a read model: its consumer group (whose inbox claims the
    rebuild makes), its store as its replicas configure it, and the model."""

    service: str
    group: str
    store_url: str
    model: ReadModel


def rebuildable(name: str) -> Rebuildable:
    """The service's read model, its group and its store; NotRebuildable (with the reason) for a service whose store
    keeps effects, and for the gateway; UnknownService for a name not in the catalog."""
    entry = entry_of(name)
    if entry.kind != "worker":
        raise NotRebuildable(
            f"{name} cannot be rebuilt: it is an HTTP service with no state of its own "
            "(it serves the tracker's read model); rebuild the tracker"
        )
    if not entry.read_model:
        raise NotRebuildable(
            f"{name} cannot be rebuilt: its store is not a read model but a record of effects ({entry.effects}), "
            f"which a rebuild would neither redo nor undo; to have {name} handle records again, use `fleet replay`"
        )
    settings = settings_class(name)()
    model = typing.cast("ReadModel", _package(name).READ_MODEL)
    return Rebuildable(name, str(settings.group_id), str(settings.store_url), model)


def run_http_service(name: str, **overrides: Any) -> None:
    """Serves an HTTP service in the foreground (uvicorn, on its settings' host and port, or `overrides`) until SIGTERM
    or Ctrl-C."""
    entry = entry_of(name)
    if entry.kind != "http":
        raise UnknownService(f"{name} is a Kafka worker, not an HTTP service")
    _package(name).serve(settings_class(name)(**overrides), read_model=_tracker_read_model())


def add_gateway_client(
    name: str, topics: list[str], *, replace: bool = False, clients_file: Path | None = None
) -> tuple[str, Path]:
    """Adds a client of the HTTP gateway to its clients file; returns its new token (shown once) and the file.
    Raises ValueError (a bad name or file), LookupError (an unknown topic) or OSError."""
    gateway = _package("gateway")
    path = clients_file or gateway.GatewaySettings().clients_file
    return gateway.add_client(path, name, topics, replace=replace), path


@contextlib.contextmanager
def throwaway_keys(signers: Iterable[str] = ()) -> Iterator[KeySettings]:
    """Dev keys for every signer in a temporary folder, as key settings for apps built only to read their wiring or
    their AsyncAPI specification (`fleet docs gen`, `fleet check`) on a machine with no keys yet, never to run them.
    Nothing global changes: the settings carry the folder."""
    with tempfile.TemporaryDirectory(prefix="eventfleet-inspect-keys-") as folder:
        init_keys(Path(folder), [*WORKERS, *HTTP_SERVICES, *UPSTREAM_SIGNERS, *signers])
        yield KeySettings(dir=Path(folder))


@functools.cache
def inspect_app(name: str) -> Any:
    """A worker's app built with its default consumer group and throwaway keys, never started: what its code subscribes
    to and publishes, the same on every machine (for the AsyncAPI document, the wiring checks and the ACL plan)."""
    cls = settings_class(name)
    with throwaway_keys() as keys:
        settings = cls(group_id=cls.model_fields["group_id"].default, keys=keys)
        return _package(name).create_app(settings)


@dataclass(frozen=True)
class Wiring:
    """What one service's app really does: the topic names its subscribers and publishers use, and its handler check."""

    subscribes: frozenset[str] = frozenset()
    publishes: frozenset[str] = frozenset()
    handler_errors: tuple[str, ...] = field(default=())
    groups: frozenset[str] = frozenset()  # the consumer groups its subscribers join


def service_wiring(services: Iterable[str] = WORKERS, registry: Registry = REGISTRY) -> dict[str, Wiring]:
    """Each worker's app, built as `inspect_app` builds it (no broker connection is made until start), read for its
    subscribers and publishers; `check_one_type_per_topic` is the check the worker runs when it starts."""
    from fleet.runtime.broker import ContractViolation, check_one_type_per_topic

    wiring = {}
    for service in services:
        broker = inspect_app(service).broker
        subscribes = {name for sub in broker.subscribers for name in getattr(sub, "topic_names_for_subscribe", ())}
        publishes = {publisher.topic for publisher in broker.publishers if getattr(publisher, "topic", None)}
        groups = {sub.group_id for sub in broker.subscribers if getattr(sub, "group_id", None)}
        errors: tuple[str, ...] = ()
        try:
            check_one_type_per_topic(broker, registry)
        except ContractViolation as error:
            errors = (str(error),)
        wiring[service] = Wiring(frozenset(subscribes), frozenset(publishes), errors, frozenset(groups))
    return wiring
