"""The tracker's settings (env prefix TRACKER_): its consumer group and where its read model lives."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fleet.runtime.settings import HttpPort, WorkerSettings

__all__ = ["TrackerSettings"]


class TrackerSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="TRACKER_", extra="ignore")

    group_id: str = Field("tracker", description="Consumer group; every replica of the service shares it.")
    http_port: HttpPort = 8105
    store_url: str = Field(
        "sqlite:///.fleet/tracker.db",
        description="The order statuses and the inbox: sqlite:///file.db, or postgresql://... for several replicas. "
        "The gateway reads it too (GATEWAY_TRACKER_STORE_URL).",
    )
