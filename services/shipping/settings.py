"""Shipping's settings (env prefix SHIPPING_): its consumer group and its store."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fleet.runtime.settings import HttpPort, WorkerSettings

__all__ = ["ShippingSettings"]


class ShippingSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="SHIPPING_", extra="ignore")

    group_id: str = Field("shipping", description="Consumer group; every replica of the service shares it.")
    http_port: HttpPort = 8103
    store_url: str = Field("sqlite:///.fleet/shipping.db", description="Shipments, inbox and outbox.")
