"""The fleet's services: each folder is one worker with a pure core, a FastStream shell and its settings."""

SERVICES = ("payments", "notifications")

__all__ = ["SERVICES"]
