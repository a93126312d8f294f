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
        self._staged: list[bytes] = []

    def append(self, line: dict) -> None:
        """Appends one line and syncs it to disk."""
        self.stage(line)
        self.flush()

    def stage(self, line: dict) -> None:
        """Keeps a line for the next `flush`."""
        self._staged.append(orjson.dumps(line) + b"\n")

    def flush(self) -> None:
        """Appends every staged line in one write, then syncs the file to disk once."""
        if not self._staged:
            return
        data, self._staged = b"".join(self._staged), []
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
