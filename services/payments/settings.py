"""Payments' settings (env prefix PAYMENTS_): its consumer group and its credit rules."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fleet.runtime.settings import HttpPort, WorkerSettings

from .core import CreditPolicy

__all__ = ["PaymentsSettings"]


class PaymentsSettings(WorkerSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    group_id: str = Field("payments", description="Consumer group; every replica of the service shares it.")
    http_port: HttpPort = 8101
    default_limit_cents: int = Field(
        100_000, description="Most one order may cost, for customers without their own limit.", ge=0
    )
    customer_limits: dict[str, int] = Field(
        default_factory=dict, description='Per-customer limits, JSON: {"cus-1042": 500000}.'
    )
    currencies: frozenset[str] = Field(
        frozenset({"EUR", "USD", "GBP"}), description='Accepted currencies, JSON: ["EUR","USD"].'
    )
    store_url: str = Field(
        "sqlite:///.fleet/payments.db",
        description="The ledger, inbox and outbox: sqlite:///file.db, or postgresql://... for several replicas.",
    )

    def credit_policy(self) -> CreditPolicy:
        return CreditPolicy(self.default_limit_cents, dict(self.customer_limits), frozenset(self.currencies))
