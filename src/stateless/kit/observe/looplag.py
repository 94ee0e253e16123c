"""Event-loop lag, visible in production: a sampler wakes every `interval` and measures how
late it woke. The delay is the time other callbacks held the loop (a blocking call, a CPU-heavy
request), observed in a histogram and logged as a warning past `warn_after_seconds`.

A sampler instead of asyncio's debug-mode slow-callback log: debug mode slows every callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import structlog

from stateless.kit.observe.metrics import Metrics

log = structlog.get_logger("stateless.loop")

SAMPLE_INTERVAL_SECONDS = 0.1
WARN_AFTER_SECONDS = 0.1


async def sample_loop_lag(
    metrics: Metrics,
    *,
    interval: float = SAMPLE_INTERVAL_SECONDS,
    warn_after_seconds: float = WARN_AFTER_SECONDS,
) -> None:
    """Run until cancelled."""
    while True:
        expected = time.perf_counter() + interval
        await asyncio.sleep(interval)
        lag = max(0.0, time.perf_counter() - expected)
        metrics.event_loop_lag.observe(lag)
        if lag > warn_after_seconds:
            log.warning("event_loop_blocked", duration_ms=round(lag * 1000, 1))


@contextlib.asynccontextmanager
async def watch_loop_lag(
    metrics: Metrics,
    *,
    interval: float = SAMPLE_INTERVAL_SECONDS,
    warn_after_seconds: float = WARN_AFTER_SECONDS,
) -> AsyncIterator[None]:
    """Sample for as long as the block runs (the app's lifespan, the worker's run)."""
    task = asyncio.create_task(
        sample_loop_lag(metrics, interval=interval, warn_after_seconds=warn_after_seconds),
        name="stateless-loop-lag",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
