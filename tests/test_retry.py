"""The one retry policy (kit/push/retry.py): tries, backoff, Retry-After, and a test mode."""

from __future__ import annotations

import time

import pytest

from stateless.kit.push.retry import Retryable, RetryPolicy


async def _run(policy: RetryPolicy, outcomes: list[Exception | str]) -> tuple[str, int]:
    calls = 0
    async for attempt in policy.attempts_of():
        with attempt:
            outcome = outcomes[calls]
            calls += 1
            if isinstance(outcome, Exception):
                raise outcome
            return outcome, calls
    raise AssertionError("unreachable")


async def test_retries_until_success_with_backoff_and_retry_after() -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(attempts=4, initial_seconds=0.25, maximum_seconds=2.0, sleep=record)
    outcome = await _run(policy, [Retryable("busy"), Retryable("slow", retry_after=3.0), "ok"])
    assert outcome == ("ok", 3)
    assert 0.25 <= waits[0] <= 0.5  # initial + jitter
    assert waits[1] == 3.0  # the server's Retry-After beats the (capped) backoff


async def test_gives_up_after_the_attempts_and_never_retries_other_errors() -> None:
    policy = RetryPolicy(attempts=2).without_sleep()
    with pytest.raises(Retryable, match="second"):
        await _run(policy, [Retryable("first"), Retryable("second"), "never"])
    with pytest.raises(ValueError):
        await _run(policy, [ValueError("permanent"), "never"])


async def test_test_mode_does_not_sleep() -> None:
    policy = RetryPolicy(attempts=5, initial_seconds=10.0, maximum_seconds=10.0).without_sleep()
    started = time.monotonic()
    assert await _run(policy, [Retryable("x")] * 4 + ["ok"]) == ("ok", 5)
    assert time.monotonic() - started < 0.5


def test_next_wait_for_loops_of_their_own() -> None:
    """The push engines' own loops: the same backoff, a Retry-After honoured up to a cap, and
    None when the tries are used up or the server asks for longer than the cap."""
    policy = RetryPolicy(attempts=3, initial_seconds=0.1, maximum_seconds=2.0, jitter_seconds=0.1)
    first = policy.next_wait(1, None, 10.0)
    assert first is not None and 0.1 <= first <= 0.2
    second = policy.next_wait(2, None, 10.0)
    assert second is not None and 0.2 <= second <= 0.3
    assert policy.next_wait(1, 5.0, 10.0) == 5.0  # Retry-After beats the backoff
    assert policy.next_wait(1, 3600.0, 10.0) is None  # too long to hold a request: report it
    assert policy.next_wait(3, None, 10.0) is None  # the last try was the third
