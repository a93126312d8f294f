"""The file-backed notification outbox: one JSON line per message.

Each line is appended and flushed to disk before the fact is published."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

__all__ = ["FileOutbox"]


class FileOutbox:
    """Appends whole lines with O_APPEND, so several replicas can share one file without tearing lines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, line: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(line) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def ids(self) -> set[str]:
        """The notification ids the feed has already."""
        return {line["notification_id"] for line in self.read()}

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [orjson.loads(line) for line in self.path.read_bytes().splitlines() if line.strip()]
