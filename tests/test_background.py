"""The one background-loop mechanism (kit/runtime/background.py): intervals, wake-ups, failures counted
and survived, leader-only jobs, and a bounded stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from stateless.kit.observe.metrics import Metrics
from stateless.kit.runtime.background import BackgroundJobs, Job


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


class Lock:
    def __init__(self, held: bool) -> None:
        self.held = held
        self.released = False

    async def try_lead(self) -> bool:
        return self.held

    async def release(self) -> None:
        self.released = True


async def test_jobs_run_on_interval_survive_failures_and_wake_at_once() -> None:
    runs: list[str] = []
    wake = asyncio.Event()
    stopped: list[str] = []

    async def flaky(_stop: asyncio.Event) -> bool:
        runs.append("flaky")
        raise RuntimeError("boom")

    async def woken(_stop: asyncio.Event) -> bool:
        runs.append("woken")
        return False

    async def on_stop() -> None:
        stopped.append("woken")

    metrics, lock = Metrics(), Lock(held=False)
    jobs = BackgroundJobs(
        [
            Job("flaky", flaky, interval_seconds=0.05),
            Job("woken", woken, interval_seconds=60, wake=wake, on_stop=on_stop),
            Job("leader", woken, interval_seconds=0.05, leader_only=True),
        ],
        lock,
        metrics=metrics,
    )
    async with jobs:
        await eventually(lambda: runs.count("flaky") >= 3)  # each failure, then the next run
        assert runs.count("woken") == 1  # the first run; the next is a minute away
        wake.set()
        await eventually(lambda: runs.count("woken") == 2)
    failures = metrics.background_failures.labels(job="flaky")._value.get()
    assert failures == runs.count("flaky")
    assert stopped == ["woken"] and lock.released  # drained and the lock let go
