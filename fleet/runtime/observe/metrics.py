"""A worker's Prometheus metrics: what happened to each event by topic and outcome, how long handlers and store commits
took, and gauges (consumer lag, outbox backlog, last commit) read when /metrics is scraped."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["OUTCOMES", "WorkerMetrics"]

# How an event's handling ended; every outcome is durable before the offset is committed.
OUTCOMES = ("handled", "retried", "dead_lettered", "failed", "skipped")
# Handlers take milliseconds; the tail goes up to the 30 s time limit.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A commit syncs to disk: well under a millisecond on a quiet local disk, hundreds on a busy or shared one.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class WorkerMetrics:
    """One registry per worker (not the process-wide default), so several workers in one test process never collide."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.received = Counter(
            "eventfleet_events_received",
            "Records read from the broker, before verification.",
            ["topic"],
            registry=self.registry,
        )
        self.outcomes = Counter(
            "eventfleet_events",
            "Events by how their handling ended: handled, retried (moved to a "
            "retry topic), dead_lettered, failed (not durable: redelivered), skipped (another group's retry).",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "eventfleet_handler_duration_seconds",
            "Time in the handler, verification excluded.",
            ["topic"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.lag = Gauge(
            "eventfleet_consumer_lag",
            "Records on the partition not yet consumed by this replica's group member.",
            ["topic", "partition", "group"],
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "eventfleet_outbox_backlog", "Outbox rows waiting for the relay.", registry=self.registry
        )
        self.store_commit = Histogram(
            "eventfleet_store_commit_seconds",
            "Time a batch's store transaction took to commit: SQLite's sync to disk, PostgreSQL's round trip and WAL "
            "flush. Every hop of an event waits for it.",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.last_commit = Gauge(
            "eventfleet_last_commit_timestamp_seconds",
            "Unix time of the last successful offset commit.",
            registry=self.registry,
        )
        self.oldest_in_flight = Gauge(
            "eventfleet_handler_oldest_in_flight_seconds",
            "How long the longest-running handler "
            "has been running (0 when none runs); /health/live fails above its bound.",
            registry=self.registry,
        )
        self.paused = Gauge(
            "eventfleet_paused",
            "1 while an operator holds the topic (`fleet pause`): the replica fetches none of it; 0 otherwise.",
            ["topic"],
            registry=self.registry,
        )
        self.since_progress = Gauge(
            "eventfleet_seconds_since_progress",
            "Seconds since a handler last finished (or the worker started).",
            registry=self.registry,
        )

    def record_received(self, topic: str, count: int = 1) -> None:
        self._child(self.received, topic).inc(count)

    def record_outcome(self, topic: str, outcome: str, seconds: float | None = None) -> None:
        self._child(self.outcomes, topic, outcome).inc()
        if seconds is not None:
            self._child(self.duration, topic).observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled series, looked up once: `labels()` validates and locks on every call, on the per-event path."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
