"""The gateway's settings (env prefix GATEWAY_).

Where it listens, its clients file, how long a publish may take, and where the tracker's read model is."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleet.runtime.settings import KafkaSettings, KeySettings

__all__ = ["GatewaySettings"]


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface the HTTP server listens on.")
    port: int = Field(8080, description="TCP port the HTTP server listens on.", ge=0, le=65535)
    clients_file: Path = Field(
        Path(".fleet/gateway/clients.json"), description="The clients and their token hashes; re-read when it changes."
    )
    publish_timeout_s: float = Field(
        5.0, description="Longest wait for the broker's acknowledgement before answering 503.", gt=0
    )
    tracker_store_url: str = Field(
        "sqlite:///.fleet/tracker.db",
        description="The tracker's store (its TRACKER_STORE_URL), read for GET /v1/orders/{order_id}; "
        "opened on the first read.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
