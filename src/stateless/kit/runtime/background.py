"""The one background-loop mechanism: cleanup, the storage orphan sweep and the task runner are
`Job`s that `BackgroundJobs` runs, each in its own task (a long cleanup never delays task
claiming), under one leader lock for the jobs that must run on one replica only.

Each job runs every `interval_seconds` (or at once when its `wake` event is set, or when its last
run asked for more, or sooner when it says more is due then); a failed run is logged and counted, and the next one runs anyway. On exit
every job is asked to stop, gets a grace period to finish its current unit, then is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import structlog

from stateless.kit.observe.metrics import Metrics

log = structlog.get_logger("stateless.background")

SHUTDOWN_GRACE_SECONDS = 10.0


class Leader(Protocol):
    """One lock shared by every replica; its holder runs the leader-only jobs."""

    async def try_lead(self) -> bool: ...

    async def release(self) -> None: ...


@dataclass(frozen=True)
class Job:
    name: str
    # One unit of work, given the stop event (finish the current batch once it is set); returns
    # True when more is due right now (run again without waiting).
    run: Callable[[asyncio.Event], Awaitable[bool]]
    interval_seconds: float
    first_delay_seconds: float = 0.0
    leader_only: bool = False
    wake: asyncio.Event | None = None
    # Called on shutdown once the job's loop has stopped, e.g. to drain work it started.
    on_stop: Callable[[], Awaitable[None]] | None = None
    # After a run: seconds until more is due, when the job knows it sooner than its interval
    # (cleanup: the next expiry it saw); None keeps the interval.
    due_in: Callable[[], float | None] | None = None


class BackgroundJobs:
    def __init__(
        self,
        jobs: Sequence[Job],
        leader: Leader,
        *,
        metrics: Metrics,
        on_leadership: Callable[[bool], None] | None = None,
    ) -> None:
        self.jobs = tuple(jobs)
        self.leader = leader
        self.on_leadership = on_leadership
        self.metrics = metrics
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def leads(self) -> bool:
        """Whether this replica holds the lock now (taking it if free); an unreachable
        database counts as not leading, and the next interval tries again."""
        try:
            leading = await self.leader.try_lead()
        except Exception as exc:  # database unreachable: try again next interval
            leading = False
            log.warning(
                "leadership_check_failed", error_type=type(exc).__name__, error=str(exc)[:200]
            )
        if self.on_leadership is not None:
            self.on_leadership(leading)
        return leading

    async def _wait(self, seconds: float, wake: asyncio.Event | None) -> None:
        """Until `seconds` pass, the job is woken, or everything stops."""
        waiters = [asyncio.ensure_future(self.stop_event.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _loop(self, job: Job) -> None:
        delay = job.first_delay_seconds
        while not self.stop_event.is_set():
            if delay > 0:
                await self._wait(delay, job.wake)
                if self.stop_event.is_set():
                    return
            if job.wake is not None:
                job.wake.clear()
            again = False
            try:
                if not job.leader_only or await self.leads():
                    again = await job.run(self.stop_event)
            except Exception as exc:  # isolation boundary: the next run must still happen
                log.error(
                    "background_job_failed",
                    kind=job.name,
                    error_type=type(exc).__name__,
                    exc_info=exc,
                )
                self.metrics.background_failures.labels(job=job.name).inc()
            delay = 0.0 if again else job.interval_seconds
            if not again and job.due_in is not None:
                due = job.due_in()
                if due is not None:
                    delay = min(delay, max(0.0, due))

    async def __aenter__(self) -> BackgroundJobs:
        self._tasks = [
            asyncio.create_task(self._loop(job), name=f"stateless-{job.name}") for job in self.jobs
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Ask every job to stop after its current unit; cancel what outlives the grace."""
        self.stop_event.set()
        for job in self.jobs:
            if job.wake is not None:
                job.wake.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for job in self.jobs:
            if job.on_stop is not None:
                await job.on_stop()
        try:
            await self.leader.release()
        finally:
            if self.on_leadership is not None:
                self.on_leadership(False)
