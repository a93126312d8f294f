"""Fault injection for chaos runs and crash tests, off unless switched on (env FLEET_FAULTS_*).

A few handlers made slow on purpose, or the process killed (SIGKILL) at a chosen point of a batch."""

from __future__ import annotations

import os
import signal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CRASH_POINTS", "FaultSettings", "Faults"]

# Where a batch may be cut by FLEET_FAULTS_CRASH_AT: once its store transaction committed and before its offsets are,
# or once the relay has published a batch's outbox rows and before it marks them.
CRASH_POINTS = ("batch_committed", "outbox_published")


class FaultSettings(BaseSettings):
    """`FLEET_FAULTS_SLOW_S=8 FLEET_FAULTS_SLOW_AFTER=200 FLEET_FAULTS_SLOW_COUNT=2`: in this process, the 201st and
    202nd records handled take 8 s longer. Used by `make chaos` to outlast `max.poll.interval.ms`; never in production.
    """

    model_config = SettingsConfigDict(env_prefix="FLEET_FAULTS_", extra="ignore")

    slow_s: float = Field(0.0, description="Extra time a slowed handler takes.", ge=0)
    slow_after: int = Field(0, description="Records this process handles normally before slowing any.", ge=0)
    slow_count: int = Field(0, description="How many records this process slows; 0 turns the fault off.", ge=0)
    crash_at: str = Field(
        "",
        description="A point of a batch where this process kills itself with SIGKILL, as a crash would: "
        "batch_committed or outbox_published; empty: never.",
        pattern="^(|batch_committed|outbox_published)$",
    )
    crash_after: int = Field(0, description="Records this process handles before the crash point may strike.", ge=0)


class Faults:
    """Counts handled records and slows the chosen ones; a process-local count,
    so a redelivered record runs at speed."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self.settings = settings or FaultSettings()
        self.handled = 0
        self.slowed = 0

    @property
    def active(self) -> bool:
        return self.settings.slow_count > 0 and self.settings.slow_s > 0

    def delay_for_next(self) -> float:
        """Counts one more handled record; the seconds to slow it by (0 for most)."""
        self.handled += 1
        if not self.active or self.handled <= self.settings.slow_after or self.slowed >= self.settings.slow_count:
            return 0.0
        self.slowed += 1
        return self.settings.slow_s

    def crash_point(self, point: str) -> None:
        """SIGKILL this process here, if a crash at `point` was asked for and enough records were handled."""
        if self.settings.crash_at == point and self.handled >= self.settings.crash_after:
            os.kill(os.getpid(), signal.SIGKILL)

    @property
    def crashes(self) -> bool:
        return bool(self.settings.crash_at)
