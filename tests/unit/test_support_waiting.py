"""`eventually` and `eventually_sync`, the one way tests wait for something elsewhere: they ask again until it holds, and
fail with what they waited for and the last answer once time is up."""

import itertools

import pytest

from tests.support import NotYet, eventually, eventually_sync


def answers(*given):
    """A check whose answers are `given`, one a call, then the last one for ever."""
    sequence = itertools.chain(given, itertools.repeat(given[-1]))
    return lambda: next(sequence)


async def test_eventually_returns_the_first_true_answer():
    assert await eventually(answers(None, 0, "ready"), "the answer", every_s=0) == "ready"


async def test_eventually_awaits_a_check_that_is_a_coroutine_function():
    calls = []

    async def check():
        calls.append(1)
        return len(calls) >= 3 and calls

    assert await eventually(check, "the third call", every_s=0) == [1, 1, 1]


async def test_eventually_fails_with_what_it_waited_for_and_the_last_answer():
    with pytest.raises(AssertionError, match=r"timed out after 0.05s waiting for a shipment; last answer: \[\]"):
        await eventually(answers([]), "a shipment", timeout_s=0.05, every_s=0.01)


async def test_eventually_raises_the_error_its_caller_chose():
    class NotSettled(RuntimeError):
        pass

    with pytest.raises(NotSettled, match="the fleet to settle"):
        await eventually(answers(False), "the fleet to settle", timeout_s=0.01, every_s=0.01, error=NotSettled)


async def test_an_ignored_exception_counts_as_not_yet_and_any_other_propagates():
    def store_not_created_yet():
        raise FileNotFoundError("tracker.db")

    with pytest.raises(AssertionError, match="last answer: FileNotFoundError"):
        await eventually(store_not_created_yet, "the store", timeout_s=0.01, every_s=0.01, ignoring=(OSError,))
    with pytest.raises(FileNotFoundError):
        await eventually(store_not_created_yet, "the store", timeout_s=0.01, every_s=0.01)


def test_eventually_sync_blocks_until_the_check_holds_and_fails_the_same_way():
    assert eventually_sync(answers(False, [], {"members": 2}), "two members", every_s=0) == {"members": 2}
    with pytest.raises(AssertionError, match="waiting for two members; last answer: 0"):
        eventually_sync(answers(0), "two members", timeout_s=0.01, every_s=0.01)


async def test_a_not_yet_answer_is_false_and_is_what_a_failed_wait_shows():
    with pytest.raises(AssertionError, match=r"last answer: NotYet\(answer=\(503, 'handler_stuck'\)\)"):
        await eventually(answers(NotYet((503, "handler_stuck"))), "liveness", timeout_s=0.01, every_s=0.01)
