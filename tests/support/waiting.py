"""Waiting for something that happens elsewhere (a broker, a process, a thread): ask again until it holds or time is up."""

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["NotYet", "eventually", "eventually_sync"]


@dataclass(frozen=True)
class NotYet:
    """What a check returns while the answer is not the awaited one yet: false, and shown as the last answer when the
    wait fails (a status, the metrics, the row as they stood)."""

    answer: Any

    def __bool__(self) -> bool:
        return False


async def eventually(check: Callable[[], Any], what: str, *, timeout_s: float = 60.0, every_s: float = 0.1,
                     error: type[Exception] = AssertionError, ignoring: tuple[type[BaseException], ...] = ()) -> Any:
    """Calls `check()` (a plain function or a coroutine function) every `every_s` until it returns something true, and
    returns that. Once `timeout_s` has passed, raises `error` saying `what` was awaited and the last answer.

    An exception of a type in `ignoring` counts as "not yet" (a store that is not created yet, a server not listening).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = check()
            if inspect.isawaitable(answer):
                answer = await answer
        except ignoring as not_yet:
            answer = not_yet
        else:
            if answer:
                return answer
        if time.monotonic() >= deadline:
            raise error(_timed_out(what, timeout_s, answer))
        await asyncio.sleep(every_s)


def eventually_sync(check: Callable[[], Any], what: str, *, timeout_s: float = 60.0, every_s: float = 0.1,
                    error: type[Exception] = AssertionError, ignoring: tuple[type[BaseException], ...] = ()) -> Any:
    """`eventually` for code without an event loop: blocks the thread between calls of `check()`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = check()
        except ignoring as not_yet:
            answer = not_yet
        else:
            if answer:
                return answer
        if time.monotonic() >= deadline:
            raise error(_timed_out(what, timeout_s, answer))
        time.sleep(every_s)


def _timed_out(what: str, timeout_s: float, answer: Any) -> str:
    return f"timed out after {timeout_s:g}s waiting for {what}; last answer: {answer!r}"
