"""One retry mechanism for outbound calls (webhooks, Mastodon, SendGrid, APNs, Web Push): one
backoff formula, exponential with jitter, capped, and a server's Retry-After honoured.

Tenacity rather than stamina: stamina's test mode and instrumentation are process-wide switches;
here the sleep is a field of the policy, so a test builds a policy that never sleeps
(`RetryPolicy.without_sleep`) and nothing global changes.

Two ways to use a policy, one formula (`delay`): `attempts_of()` (tenacity) for calls made now
and then, and `delay` + `sleep` in a plain loop for the push engines, whose every notification
is one call: tenacity's ~20 us of bookkeeping per call would be a fifth of a push's CPU.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC

from tenacity import (
    AsyncRetrying,
    AttemptManager,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
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

    def delay(self, attempt: int, retry_after: float = 0.0) -> float:
        """Seconds to wait after failed try number `attempt` (1-based) before the next one."""
        backoff = self.initial_seconds * 2.0 ** min(attempt - 1, 60)
        backoff += random.uniform(0, self.jitter_seconds)  # jitter, not crypto
        return max(min(backoff, self.maximum_seconds), retry_after)

    def next_wait(
        self, attempt: int, retry_after: float | None, max_retry_after: float
    ) -> float | None:
        """For a loop of its own: the wait before try `attempt + 1`, or None to stop there,
        when the tries are used up or the server asks for more than `max_retry_after` seconds
        (holding the caller that long is worse than reporting the answer)."""
        if attempt >= self.attempts:
            return None
        if retry_after is not None and retry_after > max_retry_after:
            return None
        return self.delay(attempt, retry_after or 0.0)

    def _wait(self) -> Callable[[RetryCallState], float]:
        def wait(state: RetryCallState) -> float:
            failed = state.outcome.exception() if state.outcome is not None else None
            retry_after = failed.retry_after if isinstance(failed, Retryable) else 0.0
            return self.delay(state.attempt_number, retry_after)

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


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delay-seconds or an HTTP-date (RFC 9110 10.2.3); None if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text[:9]))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)
