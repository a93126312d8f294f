"""What happens to a record the fleet refuses: for now a clear structured error line with its reason; dead letters extend this seam."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

__all__ = ["Rejection", "report_rejection"]

log = structlog.get_logger("fleet.rejects")


@dataclass(frozen=True)
class Rejection:
    """A refused record: where it was, and why, in one line without secrets."""

    topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    detail: str

    @classmethod
    def of(cls, record: Any, reason: str, detail: str) -> Rejection:
        key = record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) else record.key
        return cls(record.topic, record.partition, record.offset, key, reason, detail[:500])


async def report_rejection(rejection: Rejection) -> None:
    """Never silent: the record is skipped (its offset committed) only after this line is written."""
    log.error(
        "event_rejected",
        topic=rejection.topic,
        partition=rejection.partition,
        offset=rejection.offset,
        key=rejection.key,
        reason=rejection.reason,
        detail=rejection.detail,
    )
