"""Whether a worker makes progress, and the liveness and readiness decisions its probes answer.

Pure: the clock is passed in."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Hashable

__all__ = ["Progress", "Verdict", "WorkSince", "liveness", "readiness"]


class Progress:
    """Updated by the consume middleware around every handler call (after a retry's wait, which is not work); read by
    /health/live. A worker has one subscriber per topic group and retry tier, so several records can be in flight."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.in_flight: dict[Hashable, float] = {}  # subscriber → when its current record's handler started
        self.last_progress: float = clock()  # when the last record finished (or the worker started)
        self.handled = 0

    def started(self, subscriber: Hashable) -> None:
        self.in_flight[subscriber] = self.clock()

    def finished(self, subscriber: Hashable) -> None:
        self.in_flight.pop(subscriber, None)
        self.last_progress = self.clock()
        self.handled += 1

    def oldest_in_flight_s(self) -> float:
        """How long the longest-running handler has been running (0 when none runs)."""
        return self.clock() - min(self.in_flight.values()) if self.in_flight else 0.0


class WorkSince:
    """When the worker was last seen going from no lag to some lag (None while it has none), so a record that arrives
    after an hour of quiet is not taken for an hour without progress. Updated by each liveness check."""

    def __init__(self) -> None:
        self.since: float | None = None

    def observe(self, lag: int, now: float) -> float | None:
        if lag <= 0:
            self.since = None
        elif self.since is None:
            self.since = now
        return self.since


@dataclass(frozen=True)
class Verdict:
    """A probe's answer: ok or not, a stable snake_case reason, a sentence for people,
    and the figures it was based on."""

    ok: bool
    reason: str
    detail: str
    facts: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "fail", "reason": self.reason, "detail": self.detail, **self.facts}


def liveness(
    *,
    now: float,
    bound_s: float,
    oldest_in_flight_s: float,
    last_progress: float,
    lag: int,
    work_since: float | None,
    broker_reachable: bool = True,
    paused: bool = False,
) -> Verdict:
    """Live unless stuck: a handler in flight for longer than `bound_s`, or work waiting (`lag` > 0 since `work_since`)
    and no handler finished for longer than `bound_s` while the broker answers. A slow or absent broker never makes
    a worker not live: restarting it would not help. `now`, `last_progress` and `work_since` are on one clock."""
    facts = {
        "oldest_in_flight_s": round(oldest_in_flight_s, 3),
        "seconds_since_progress": round(now - last_progress, 3),
        "lag": lag,
        "bound_s": bound_s,
    }
    if oldest_in_flight_s > bound_s:
        return Verdict(
            False,
            "handler_stuck",
            f"a handler has been running for {oldest_in_flight_s:.1f} s, over the {bound_s:g} s bound",
            facts,
        )
    if paused:  # records wait because an operator said so: restarting the worker would not help, nor is it stuck
        return Verdict(True, "paused", "paused by an operator (fleet resume lets it go on)", facts)
    if lag > 0 and work_since is not None:
        idle_s = now - max(last_progress, work_since)
        if idle_s > bound_s:
            if not broker_reachable:
                return Verdict(
                    True,
                    "waiting_for_broker",
                    f"{lag} records wait and none was handled for {idle_s:.1f} s, "
                    "but the broker does not answer: not the worker's fault",
                    facts,
                )
            return Verdict(
                False,
                "no_progress",
                f"{lag} records wait and none was handled for {idle_s:.1f} s, over the {bound_s:g} s bound",
                facts,
            )
    return Verdict(True, "ok", "making progress" if lag > 0 else "nothing stuck", facts)


def readiness(
    *,
    stopping: bool,
    connected: bool,
    unassigned: list[str],
    lag: int,
    unknown: list[str],
    threshold: int,
    paused: str | None = None,
) -> Verdict:
    """Ready only while running, connected to the broker, with partitions assigned to every main subscriber
    (`unassigned` names those without), the lag of every assigned partition known (`unknown` names those not yet known),
    and the main subscribers' total `lag` below `threshold`; not while an operator holds it (`paused` says how)."""
    facts = {"lag": lag, "lag_threshold": threshold}
    if stopping:
        return Verdict(False, "stopping", "the worker is shutting down", facts)
    if paused is not None:
        return Verdict(False, "paused", paused, facts)
    if not connected:
        return Verdict(False, "broker_unreachable", "the broker does not answer", facts)
    if unassigned:
        return Verdict(
            False,
            "not_assigned",
            f"no partitions assigned yet to: {', '.join(unassigned)}",
            {**facts, "unassigned": unassigned},
        )
    if unknown:
        return Verdict(
            False,
            "lag_unknown",
            f"the lag of {len(unknown)} partitions is not known yet",
            {**facts, "unknown": unknown},
        )
    if lag >= threshold:
        return Verdict(False, "lagging", f"{lag} records behind, not below the threshold of {threshold}", facts)
    return Verdict(True, "ok", f"{lag} records behind", facts)
