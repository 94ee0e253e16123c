"""The background loop: every CLEANUP_INTERVAL_SECONDS, if this process leads, run cleanup.

A failed run is counted and the next one runs anyway; on shutdown the current batch finishes
(bounded) and the loop stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog

from stateless.container import Container
from stateless.kit.db import utcnow
from stateless.lifecycle.cleanup import CleanupService
from stateless.lifecycle.state import SchedulerState

__all__ = ["CleanupScheduler", "SchedulerState", "cleanup_service", "run_cleanup_loop"]

log = structlog.get_logger("stateless.scheduler")

SHUTDOWN_GRACE_SECONDS = 10.0


def cleanup_service(container: Container) -> CleanupService:
    return CleanupService(
        container.sessionmaker,
        container.lifecycle,
        container.metrics,
        container.settings.cleanup_batch_size,
        is_sqlite=container.settings.is_sqlite,
        hook_batch_size=container.settings.cleanup_hook_batch_size,
    )


class CleanupScheduler:
    def __init__(self, container: Container) -> None:
        self.container = container
        self.interval = container.settings.cleanup_interval_seconds
        self.state = container.background.cleanup
        self.leadership = container.background.leadership
        self.service = cleanup_service(container)
        self.stop_event = asyncio.Event()

    async def tick(self) -> None:
        metrics = self.container.metrics
        try:
            leading = await self.leadership.try_lead()
        except Exception as exc:  # database unreachable: try again next interval
            leading = False
            log.warning(
                "leadership_check_failed", error_type=type(exc).__name__, error=str(exc)[:200]
            )
        self.state.is_leader = leading
        metrics.cleanup_leader.set(1 if leading else 0)
        if not leading:
            return
        started = time.time()
        try:
            report = await self.service.run_once(stop=self.stop_event)
        except Exception as exc:  # isolation boundary: the next run must still happen
            self.state.error_count += 1
            self.state.last_run_status = "error"
            metrics.cleanup_runs.labels(outcome="error").inc()
            log.error("cleanup_run_failed", error_type=type(exc).__name__, exc_info=exc)
        else:
            self.state.last_run_status = "success" if report.ok else "partial"
            if not report.ok:
                self.state.error_count += 1
            metrics.cleanup_runs.labels(outcome=self.state.last_run_status).inc()
            if report.ok:
                metrics.cleanup_last_success.set(started)
            deleted = sum(report.deleted.values())
            if deleted:
                log.info(
                    "cleanup_run", count=deleted, duration_ms=round((time.time() - started) * 1000)
                )
        self.state.run_count += 1
        self.state.last_run_time = utcnow()

    async def run(self) -> None:
        self.state.is_running = True
        self.state.started_at = utcnow()
        try:
            while not self.stop_event.is_set():
                await self.tick()
                self.state.next_run = utcnow() + timedelta(seconds=self.interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), timeout=self.interval)
        finally:
            self.state.is_running = False
            self.state.is_leader = False
            self.container.metrics.cleanup_leader.set(0)
            await self.leadership.release()


@contextlib.asynccontextmanager
async def run_cleanup_loop(container: Container) -> AsyncIterator[CleanupScheduler]:
    scheduler = CleanupScheduler(container)
    task = asyncio.create_task(scheduler.run(), name="stateless-cleanup")
    try:
        yield scheduler
    finally:
        scheduler.stop_event.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=SHUTDOWN_GRACE_SECONDS)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
