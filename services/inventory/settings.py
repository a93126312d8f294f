"""Inventory's settings (env prefix INVENTORY_): its consumer group and its store."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fleet.runtime.settings import HttpPort, WorkerSettings

__all__ = ["InventorySettings"]


class InventorySettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_", extra="ignore")

    group_id: str = Field("inventory", description="Consumer group; every replica of the service shares it.")
    http_port: HttpPort = 8102
    store_url: str = Field(
        "sqlite:///.fleet/inventory.db", description="Stock, order lines, reservations, inbox and outbox."
    )
