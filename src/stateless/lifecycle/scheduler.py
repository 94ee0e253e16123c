"""The cleanup job: every CLEANUP_INTERVAL_SECONDS, on the replica holding the leader lock,
delete expired rows (run by kit/runtime/background.py with the other background jobs).

Before each pass the leader measures the expired backlog of every kind (index ranges only) into
the `stateless_expired_rows` and `stateless_oldest_expired_age_seconds` gauges: how many rows
the pass found and how long the oldest had waited, i.e. the deletion lag. A process that stops
leading clears them, so only the leader reports the deployment's figures.

A failed run is counted and the next one runs anyway; on shutdown the current batch finishes
and the job stops. The job receives the providers it uses (the cleanup service, its state, the
metrics), built in `domains.py`, never the container.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import structlog

from stateless.kit.data.db import utcnow
from stateless.kit.observe.metrics import Metrics
from stateless.kit.runtime.background import Job
from stateless.lifecycle.cleanup import Backlog, CleanupService
from stateless.lifecycle.state import SchedulerState

__all__ = ["CleanupScheduler", "SchedulerState"]

log = structlog.get_logger("stateless.scheduler")

# A pass follows the soonest expiry it saw by this much (the row is then surely expired), and
# never comes sooner than MIN_GAP_SECONDS after the last one (a steady trickle of expiries
# costs a pass per 5 s at most).
EXPIRY_SLACK_SECONDS = 0.5
MIN_GAP_SECONDS = 5.0


class CleanupScheduler:
    """Runs cleanup and keeps the state admin status reports (BackgroundState.cleanup)."""

    def __init__(
        self,
        service: CleanupService,
        state: SchedulerState,
        metrics: Metrics,
        interval_seconds: float,
    ) -> None:
        self.service = service
        self.state = state
        self.metrics = metrics
        self.interval = interval_seconds
        self.due_at: float | None = None  # monotonic instant the next pass is due, if sooner

    def on_leadership(self, leading: bool) -> None:
        """Called by the background loop after each leadership check."""
        self.state.is_leader = leading
        self.metrics.cleanup_leader.set(1 if leading else 0)
        if not leading:
            self.metrics.expired_rows.clear()
            self.metrics.oldest_expired_age.clear()
        if not leading and self.state.is_running:
            self.state.next_run = utcnow() + timedelta(seconds=self.interval)

    async def measure_backlog(self) -> dict[str, Backlog]:
        """Refresh the deletion-lag gauges (and hand the figures to the pass, whose pace meets
        the deadline by them); a failure is logged and counted, and the pass runs anyway
        (the gauges then keep their previous figures)."""
        try:
            backlog = await self.service.backlog()
        except Exception as exc:  # isolation boundary: measuring must never stop the deleting
            self.metrics.cleanup_errors.labels(kind="backlog").inc()
            log.error("cleanup_backlog_failed", error_type=type(exc).__name__, exc_info=exc)
            return {}
        for kind, figures in backlog.items():
            self.metrics.expired_rows.labels(kind=kind).set(figures.expired_rows)
            self.metrics.oldest_expired_age.labels(kind=kind).set(figures.oldest_age_seconds)
        return backlog

    async def plan_next(self) -> None:
        """When the next pass is due: at the interval, or soon after the soonest expiry seen
        (never sooner than MIN_GAP_SECONDS after this pass), so a cohort that expires between
        passes waits seconds, not a whole interval."""
        self.due_at = None
        try:
            soonest = await self.service.next_expiry()
        except Exception as exc:  # isolation boundary: the interval still applies
            self.metrics.cleanup_errors.labels(kind="next_expiry").inc()
            log.error("cleanup_next_expiry_failed", error_type=type(exc).__name__, exc_info=exc)
            return
        if soonest is not None:
            wait = (soonest - utcnow()).total_seconds() + EXPIRY_SLACK_SECONDS
            self.due_at = time.monotonic() + max(MIN_GAP_SECONDS, wait)

    def due_in(self) -> float | None:
        return None if self.due_at is None else self.due_at - time.monotonic()

    async def run_once(self, stop: asyncio.Event) -> bool:
        started = time.time()
        backlog = await self.measure_backlog()
        try:
            report = await self.service.run_once(stop=stop, backlog=backlog)
        except Exception as exc:  # isolation boundary: the next run must still happen
            self.state.error_count += 1
            self.state.last_run_status = "error"
            self.metrics.cleanup_runs.labels(outcome="error").inc()
            log.error("cleanup_run_failed", error_type=type(exc).__name__, exc_info=exc)
        else:
            self.state.last_run_status = "success" if report.ok else "partial"
            if not report.ok:
                self.state.error_count += 1
            self.metrics.cleanup_runs.labels(outcome=self.state.last_run_status).inc()
            if report.ok:
                self.metrics.cleanup_last_success.set(started)
            deleted = sum(report.deleted.values())
            if deleted:
                log.info(
                    "cleanup_run", count=deleted, duration_ms=round((time.time() - started) * 1000)
                )
        await self.plan_next()
        self.state.run_count += 1
        self.state.last_run_time = utcnow()
        due = self.due_in()
        wait = self.interval if due is None else min(self.interval, max(0.0, due))
        self.state.next_run = utcnow() + timedelta(seconds=wait)
        return False

    async def stopped(self) -> None:
        self.state.is_running = False

    def job(self) -> Job:
        self.state.is_running = True
        self.state.started_at = utcnow()
        return Job(
            "cleanup",
            self.run_once,
            interval_seconds=self.interval,
            leader_only=True,
            on_stop=self.stopped,
            due_in=self.due_in,
        )
