"""Retries without blocking a partition: a failed record moves to a retry topic, due after a delay.

The retry record is re-signed by its consumer."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Sequence

from contracts import Envelope, PrivateKey, Record, Topic, sign

__all__ = [
    "DEFAULT_DELAYS_S",
    "ORIGINAL_KEYID",
    "DeadLetterStep",
    "RetryPolicy",
    "RetryStep",
    "attempt_of",
    "carried_failures",
    "due_ms",
    "failure_headers",
    "next_step",
    "retry_record",
]

DEFAULT_DELAYS_S = (1.0, 10.0, 60.0)
ORIGINAL_KEYID = "eventfleet-original-keyid"
H_ATTEMPT, H_GROUP, H_DUE = "retry-attempt", "retry-group", "retry-not-before-ms"
H_FIRST, H_LAST, H_ERROR, H_REASON = (
    "retry-first-failure-at",
    "retry-last-failure-at",
    "retry-error-class",
    "retry-reason",
)
H_ORIGIN_TOPIC, H_ORIGIN_PARTITION, H_ORIGIN_OFFSET = (
    "retry-original-topic",
    "retry-original-partition",
    "retry-original-offset",
)
RETRY_HEADERS = frozenset(
    {H_ATTEMPT, H_GROUP, H_DUE, H_FIRST, H_LAST, H_ERROR, H_REASON, H_ORIGIN_TOPIC, H_ORIGIN_PARTITION, H_ORIGIN_OFFSET}
)


@dataclass(frozen=True)
class RetryPolicy:
    """How one subscriber retries: the delay before each retry
    (at most one per retry topic) and a handler time limit."""

    group: str
    delays_s: tuple[float, ...] = DEFAULT_DELAYS_S
    handler_timeout_s: float = 30.0
    tier: int = 0  # 0: the subscriber of the topic itself; n: the subscriber of retry topic n

    def __post_init__(self) -> None:
        if len(self.delays_s) > 3 or any(d < 0 for d in self.delays_s):
            raise ValueError("at most 3 retry delays (one per retry topic), none negative")


@dataclass(frozen=True)
class RetryStep:
    tier: int
    due_ms: int


@dataclass(frozen=True)
class DeadLetterStep:
    reason: str


def attempt_of(headers: Sequence[tuple[str, bytes]]) -> int:
    """How many times this record was handled before: 0 on its own topic, n on retry topic n."""
    found = dict(headers).get(H_ATTEMPT)
    return int(found) if found else 0


def due_ms(headers: Sequence[tuple[str, bytes]]) -> int:
    found = dict(headers).get(H_DUE)
    return int(found) if found else 0


def next_step(policy: RetryPolicy, attempts_so_far: int, permanent: bool, now_ms: int) -> RetryStep | DeadLetterStep:
    """After a failure: the next retry topic and when it is due, or the dead-letter topic and why."""
    if permanent:
        return DeadLetterStep("permanent_error")
    if attempts_so_far >= len(policy.delays_s):
        return DeadLetterStep("retries_exhausted")
    tier = attempts_so_far + 1
    return RetryStep(tier, now_ms + int(policy.delays_s[tier - 1] * 1000))


def carried_failures(headers: Sequence[tuple[str, bytes]], tier: int) -> dict[str, str]:
    """What a record of a retry tier says about its earlier failures, where it first came from included, so that its
    dead letter names that topic, partition and offset. Nothing on a topic's own subscriber: retry headers on a record
    there were not written by the fleet."""
    if not tier:
        return {}
    carried = RETRY_HEADERS - {H_DUE}  # when it was due says nothing about a dead letter
    return {k: v.decode("utf-8", "replace") for k, v in headers if k in carried and isinstance(v, bytes)}


def failure_headers(
    previous: Sequence[tuple[str, bytes]],
    *,
    attempt: int,
    group: str,
    error: BaseException,
    origin: tuple[str, int, int],
    now: datetime,
) -> dict[str, str]:
    """What a retry or dead letter says about its failures: counts, first and last time,
    the error's class and one line."""
    before = {k: v.decode("utf-8", "replace") for k, v in previous if k in RETRY_HEADERS}
    stamp = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
    topic, partition, offset = (before.get(H_ORIGIN_TOPIC), before.get(H_ORIGIN_PARTITION), before.get(H_ORIGIN_OFFSET))
    if topic is None or partition is None or offset is None:  # the first failure (or a record missing one of them)
        topic, partition, offset = origin[0], str(origin[1]), str(origin[2])
    return {
        H_ATTEMPT: str(attempt),
        H_GROUP: group,
        H_FIRST: before.get(H_FIRST, stamp),
        H_LAST: stamp,
        H_ERROR: type(error).__name__,
        H_REASON: one_line(error),
        H_ORIGIN_TOPIC: topic,
        H_ORIGIN_PARTITION: partition,
        H_ORIGIN_OFFSET: offset,
    }


def retry_record(
    topic: Topic,
    tier: int,
    key: str,
    value: bytes,
    envelope: Envelope,
    headers: Sequence[tuple[str, bytes]],
    failure: dict[str, str],
    due: int,
    signer: PrivateKey,
    now: datetime,
) -> tuple[Record, list[tuple[str, bytes]]]:
    """The record to put on retry topic `tier`: same ce_id, flow and cause, a fresh ce_time, signed by the consumer
    for that retry topic only; the first signer's key id stays visible. Returns the record and its extra headers."""
    fresh = replace(envelope, time=now.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"))
    record = sign(Record(topic.retry_topic(tier), key, value, fresh), signer)
    original = dict(headers).get(ORIGINAL_KEYID, envelope.keyid.encode())
    kept = [
        (k, v)
        for k, v in headers
        if not k.startswith("ce_") and k != "content-type" and k not in RETRY_HEADERS and k != ORIGINAL_KEYID
    ]
    extra = kept + [(ORIGINAL_KEYID, original)] + [(k, v.encode()) for k, v in (failure | {H_DUE: str(due)}).items()]
    return record, extra


def one_line(error: BaseException) -> str:
    """The error's first line, short, for a header or a log line (never a stack trace)."""
    return (str(error).splitlines() or [type(error).__name__])[0][:300] or type(error).__name__


def now_ms() -> int:
    return time.time_ns() // 1_000_000
