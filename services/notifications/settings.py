"""Notifications' settings (env prefix NOTIFICATIONS_): its consumer group and where its outbox file lives."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fleet.runtime.settings import HttpPort, WorkerSettings

__all__ = ["NotificationsSettings"]


class NotificationsSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", extra="ignore")

    group_id: str = Field("notifications", description="Consumer group; every replica of the service shares it.")
    http_port: HttpPort = 8104
    outbox_path: Path = Field(
        Path(".fleet/notifications/outbox.jsonl"),
        description="The mail system's feed: one JSON line per new notification.",
    )
    store_url: str = Field(
        "sqlite:///.fleet/notifications.db",
        description="Notifications, inbox and outbox: sqlite:///file.db, or postgresql://...",
    )
