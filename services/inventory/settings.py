"""Inventory's settings (env prefix INVENTORY_): its consumer group and its store."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleet.settings import KafkaSettings, KeySettings

__all__ = ["InventorySettings"]


class InventorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_", extra="ignore")

    group_id: str = Field("inventory", description="Consumer group; every replica of the service shares it.")
    store_url: str = Field("sqlite:///.fleet/inventory.db", description="Stock, order lines, reservations, inbox and outbox.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
