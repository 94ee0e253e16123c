"""One retry mechanism for outbound calls (webhooks, Mastodon, SendGrid, APNs): tenacity with one
backoff formula, exponential with jitter, capped, and a server's Retry-After honoured.

Tenacity rather than stamina: stamina's test mode and instrumentation are process-wide switches;
here the sleep is a field of the policy, so a test builds a policy that never sleeps
(`RetryPolicy.without_sleep`) and nothing global changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from tenacity import (
    AsyncRetrying,
    AttemptManager,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)


class Retryable(Exception):
    """Raise inside an attempt to try again (until the attempts run out, when it propagates).

    `retry_after`: the server asked us to wait at least this long (seconds).
    """

    def __init__(self, detail: str, *, retry_after: float = 0.0) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


async def _no_sleep(_seconds: float) -> None:
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; before try n+1 wait min(initial * 2**(n-1) + U(0, jitter),
    maximum), or the server's Retry-After when longer."""

    attempts: int
    initial_seconds: float = 0.25
    maximum_seconds: float = 2.0
    jitter_seconds: float = 0.25
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)

    def without_sleep(self) -> RetryPolicy:
        """The same policy for tests: every attempt, no waiting."""
        return RetryPolicy(
            self.attempts,
            self.initial_seconds,
            self.maximum_seconds,
            self.jitter_seconds,
            sleep=_no_sleep,
        )

    def _wait(self) -> Callable[[RetryCallState], float]:
        backoff = wait_exponential_jitter(
            multiplier=self.initial_seconds, max=self.maximum_seconds, jitter=self.jitter_seconds
        )

        def wait(state: RetryCallState) -> float:
            seconds = backoff(state)
            failed = state.outcome.exception() if state.outcome is not None else None
            if isinstance(failed, Retryable):
                seconds = max(seconds, failed.retry_after)
            return float(seconds)

        return wait

    async def attempts_of(self) -> AsyncIterator[AttemptManager]:
        """`async for attempt in policy.attempts_of(): with attempt: ...`; raising `Retryable`
        in the block tries again, anything else (or the last `Retryable`) propagates."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait(),
            retry=retry_if_exception_type(Retryable),
            sleep=self.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            yield attempt
