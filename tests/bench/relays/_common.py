"""What every relay shares: its command line, its clock (first consumed → last done) and the result file it writes."""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path


def arguments(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", default="bench.in")
    parser.add_argument("--sink", default="bench.out")
    parser.add_argument("--group", required=True, help="a fresh group per run: it reads the prefilled events from the start")
    parser.add_argument("--events", type=int, required=True, help="stop after relaying this many")
    parser.add_argument("--result", type=Path, required=True, help="where to write the JSON result")
    return parser.parse_args(argv)


@dataclass
class Clock:
    """The measured window: from the first event consumed to the last one done (produced, and committed when manual)."""

    events: int
    started: float = field(default_factory=time.perf_counter)  # process start (after imports): for the ready time
    first: float | None = None
    last: float | None = None
    cpu_first: float | None = None
    cpu_last: float | None = None

    def first_consumed(self) -> None:
        if self.first is None:
            self.first, self.cpu_first = time.perf_counter(), time.process_time()

    def last_done(self) -> None:
        self.last, self.cpu_last = time.perf_counter(), time.process_time()

    def result(self, **extra) -> dict:
        if self.first is None or self.last is None:
            raise RuntimeError("the relay never consumed")
        window = self.last - self.first
        cpu = self.cpu_last - self.cpu_first
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "events": self.events,
            "first": self.first,  # CLOCK_MONOTONIC: comparable between the processes of one run
            "last": self.last,
            "window_s": window,
            "events_per_s": self.events / window if window > 0 else None,
            "cpu_window_s": cpu,
            "cpu_us_per_event": cpu / self.events * 1e6,
            "ready_to_first_s": self.first - self.started,
            "self_maxrss_kib": usage.ru_maxrss,
            "pid": os.getpid(),
            **extra,
        }


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
