"""The `fleet` command as a user runs it: in its own process, and what a failure must look like to that user."""

import subprocess
import sys
from pathlib import Path

# What never belongs in front of a user whose command failed as expected: ours or the libraries' leftovers.
LIBRARY_NOISE = ("Traceback", "Unclosed", "Task was destroyed")


def run_fleet(*args: str, cwd: Path, env: dict[str, str], timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    """`python -m fleet ARGS` in a process of its own; a command that hangs fails the test after `timeout_s`."""
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )


def assert_fails_in_one_line(result: subprocess.CompletedProcess, code: int) -> str:
    """The failure a user should meet: exit `code`, one non-empty line on stderr, no traceback and no library noise
    on either stream. Returns that line."""
    shown = f"exit {result.returncode}\nstderr: {result.stderr[-3000:]}\nstdout: {result.stdout[-1000:]}"
    assert result.returncode == code, shown
    assert result.stderr.strip() and "\n" not in result.stderr.rstrip("\n"), shown
    for noise in LIBRARY_NOISE:
        assert noise not in result.stderr + result.stdout, shown
    return result.stderr.strip()
