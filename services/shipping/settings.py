"""Shipping's settings (env prefix SHIPPING_): its consumer group and its store."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleet.settings import KafkaSettings, KeySettings

__all__ = ["ShippingSettings"]


class ShippingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHIPPING_", extra="ignore")

    group_id: str = Field("shipping", description="Consumer group; every replica of the service shares it.")
    store_url: str = Field("sqlite:///.fleet/shipping.db", description="Shipments, inbox and outbox.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
