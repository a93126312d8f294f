"""The fleet's services: one folder per service.

Each has a pure core, a thin shell (FastStream or FastAPI) and its settings."""

# Kafka workers: each is a consumer group, and `fleet up` runs them.
SERVICES = ("payments", "inventory", "shipping", "notifications", "tracker")
# HTTP services: `fleet run` serves them with uvicorn; they consume nothing, so they are not part of `fleet up`.
HTTP_SERVICES = ("gateway",)

__all__ = ["HTTP_SERVICES", "SERVICES"]
