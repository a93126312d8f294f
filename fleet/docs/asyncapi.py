"""The fleet's AsyncAPI document, `asyncapi.yaml`: every worker's specification from the catalog, assembled by
fleet.runtime.asyncapi, written by `fleet docs gen` and compared by `fleet check`."""

from __future__ import annotations

from pathlib import Path

from contracts import REGISTRY, Registry
from fleet import catalog
from fleet.runtime import asyncapi
from fleet.runtime.asyncapi import UnknownService, WorkerSpec

__all__ = [
    "DOCUMENT",
    "UnknownService",
    "document_services",
    "fleet_document",
    "render",
    "service_document",
    "worker_specs",
]

DOCUMENT = Path("asyncapi.yaml")  # the checkout's, from the working directory


def worker_specs(services: tuple[str, ...] = catalog.WORKERS) -> list[WorkerSpec]:
    """Each worker's specification, from its app as the catalog builds it for inspection (default group,
    throwaway keys)."""
    return [WorkerSpec.of(service, catalog.inspect_app(service)) for service in services]


def fleet_document(services: tuple[str, ...] = catalog.WORKERS, *, registry: Registry = REGISTRY) -> dict:
    """The whole fleet's document (see fleet.runtime.asyncapi.fleet_document)."""
    return asyncapi.fleet_document(worker_specs(services), registry=registry)


def service_document(service: str, *, registry: Registry = REGISTRY) -> dict:
    """What one service (a worker, an upstream publisher, `fleet-dlq`) sends and receives:
    `fleet docs gen --service`."""
    return asyncapi.service_document(service, worker_specs(), registry=registry)


def document_services(registry: Registry = REGISTRY) -> tuple[str, ...]:
    """Every name `service_document` accepts: the workers, the upstream publishers and `fleet-dlq`."""
    return asyncapi.document_services(worker_specs(), registry)


def render(document: dict | None = None) -> str:
    """A document as committed (default: the fleet's, `asyncapi.yaml` as the code generates it)."""
    return asyncapi.render(fleet_document() if document is None else document)
