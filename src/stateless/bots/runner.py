"""Running tasks: bounded by BOT_TIMEOUT_SECONDS, and the durable queue's background worker.

A resumable task (a broadcast) is bounded by PUSH_BROADCAST_MAX_SECONDS from its first start
instead; BOT_TIMEOUT_SECONDS bounds each of its pages, and its journal write after every page
renews the lease (bots/progress.py).

Async tasks live in bot_tasks. The worker claims due ones (FOR UPDATE SKIP LOCKED on Postgres,
a guarded UPDATE on SQLite), holds a lease while running, and writes the outcome guarded by the
attempt number. Transient failures go back to the queue with exponential backoff and jitter; a
task whose worker died (running, lease expired) is claimed again. Any replica may run the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from datetime import timedelta
from typing import Any

import orjson
import structlog
from pydantic import ValidationError

from stateless.bots.progress import TaskCancelled, TaskJournal, TaskLost, progress_counts
from stateless.bots.repository import BotTaskRepository, ClaimedTask, TaskQueue
from stateless.bots.tasks import registry
from stateless.bots.tasks.base import TaskDeps, TaskFailed, TaskProviders, TaskType
from stateless.config import Settings
from stateless.kit.data.db import session_scope, utcnow
from stateless.kit.runtime.background import Job
from stateless.kit.web.errors import ProblemError
from stateless.tenants.directory import TenantDirectory
from stateless.tenants.schemas import TenantContext, TenantSnapshot, VerifiedAppId

log = structlog.get_logger("stateless.bots")

CONTEXT_PURPOSE = "bot-task-context"
LEASE_GRACE_SECONDS = 30.0
MAX_RETRY_DELAY_SECONDS = 15 * 60.0
SHUTDOWN_GRACE_SECONDS = 10.0
DEFAULT_BASE_URL = "http://localhost:8000"


class TaskTimedOut(Exception):
    """The task did not finish within BOT_TIMEOUT_SECONDS."""


def lease_seconds(settings: Settings) -> float:
    return settings.bot_timeout_seconds + LEASE_GRACE_SECONDS


def retry_delay_seconds(base_seconds: float, attempts: int) -> float:
    """Exponential backoff with jitter: base * 2^(n-1), scaled by 0.5-1.0, capped."""
    delay: float = min(base_seconds * 2.0 ** max(0, attempts - 1), MAX_RETRY_DELAY_SECONDS)
    return delay * (0.5 + random.random() / 2)


def worker_tenant(snapshot: TenantSnapshot) -> TenantContext:
    """The tenant a queued task runs as: the same app, with secret-key rights."""
    return TenantContext(
        app_id=VerifiedAppId(snapshot.app_id),
        scope="secret",
        key_id="worker",
        config=snapshot.config,
        secrets_sealed=snapshot.secrets_sealed,
    )


async def run_bounded(
    task: TaskType[Any], ctx: Any, deps: TaskDeps, timeout_seconds: float
) -> dict[str, Any]:
    """Run one task; TaskTimedOut when our own deadline passes (a provider timeout is TaskFailed)."""
    deadline = asyncio.timeout(timeout_seconds)
    try:
        async with deadline:
            return await task.run(ctx, deps)
    except TimeoutError:
        if deadline.expired():
            raise TaskTimedOut from None
        raise TaskFailed("the provider timed out", transient=True) from None


def result_text(result: dict[str, Any]) -> str:
    return orjson.dumps(result).decode()


class TaskWorker:
    """Claims and runs queued tasks with the providers tasks use, the tenant directory (a task
    runs as its tenant's current configuration) and the event a queueing sets to wake it."""

    def __init__(
        self, providers: TaskProviders, directory: TenantDirectory, wake: asyncio.Event
    ) -> None:
        self.providers = providers
        self.settings = settings = providers.settings
        self.sessionmaker = providers.sessionmaker
        self.metrics = providers.metrics
        self.privacy = providers.kit
        self.directory = directory
        self.wake = wake
        self.concurrency = settings.bot_worker_concurrency
        self.poll_seconds = settings.bot_poll_interval_seconds
        self.running: set[asyncio.Task[None]] = set()
        self._next_sync_sweep = 0.0

    async def poll(self, _stop: asyncio.Event) -> bool:
        """Claim what is due and start it; True when more may be due right now."""
        try:
            claimed = await self.claim()
        except Exception as exc:  # database away: try again at the next poll
            claimed = []
            log.warning("bot_task_claim_failed", error_type=type(exc).__name__)
        for item in claimed:
            task = asyncio.create_task(self.process(item), name=f"bot-task-{item.task_id}")
            self.running.add(task)
            task.add_done_callback(self.running.discard)
        return bool(claimed) and len(self.running) < self.concurrency

    def job(self) -> Job:
        """Every BOT_POLL_INTERVAL_SECONDS on every replica, at once after a queueing here;
        on stop, running tasks get a grace period."""
        return Job(
            "bot-tasks",
            self.poll,
            interval_seconds=self.poll_seconds,
            wake=self.wake,
            on_stop=self.shutdown,
        )

    async def claim(self) -> list[ClaimedTask]:
        free = self.concurrency - len(self.running)
        if free <= 0:
            return []
        now = utcnow()
        async with session_scope(self.sessionmaker) as session:
            queue = TaskQueue(session, is_postgres=not self.settings.is_sqlite)
            if time.monotonic() >= self._next_sync_sweep:  # rare event: look every lease grace
                self._next_sync_sweep = time.monotonic() + LEASE_GRACE_SECONDS
                await queue.fail_abandoned_sync(now)
            return await queue.claim(
                now, now + timedelta(seconds=lease_seconds(self.settings)), free
            )

    async def process(self, item: ClaimedTask) -> None:
        try:
            await self._process(item)
        except Exception as exc:  # isolation boundary: one task must not stop the worker
            self.metrics.tasks.labels(task_type=item.task_type, outcome="error").inc()
            log.error(
                "bot_task_crashed",
                task_type=item.task_type,
                error_type=type(exc).__name__,
                exc_info=exc,
            )
            with contextlib.suppress(Exception):
                await self._finish(
                    item,
                    status="failed",
                    error=("internal_error", "the task failed unexpectedly"),
                )

    async def _finish(
        self,
        item: ClaimedTask,
        *,
        status: str,
        result: dict[str, Any] | None = None,
        error: tuple[str, str] | None = None,
        retry_in_seconds: float | None = None,
        only_status: str | None = None,
        progress: dict[str, Any] | None = None,
    ) -> int:
        now = utcnow()
        values: dict[str, Any] = {
            "status": status,
            "lease_expires_at": None,
            "error_code": error[0] if error else None,
            "error_detail": error[1][:500] if error else None,
        }
        if retry_in_seconds is None:
            # Final: the context (recipients, payloads) is dropped; only the outcome stays.
            values.update(
                context_sealed=None,
                finished_at=now,
                result_json=result_text(result) if result is not None else None,
            )
        else:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in_seconds)
        if progress is not None:
            values["progress_json"] = result_text(progress)
        async with session_scope(self.sessionmaker) as session:
            repo = BotTaskRepository(session, VerifiedAppId(item.app_id))
            written = await repo.finish(
                item.task_id, values, attempts=item.attempts, status=only_status
            )
        if written:
            outcome = status if retry_in_seconds is None else "retry"
            self.metrics.tasks.labels(task_type=item.task_type, outcome=outcome).inc()
        return written

    async def _process(self, item: ClaimedTask) -> None:
        settings = self.settings
        task = registry().get(item.task_type)
        snapshot = await self.directory.get(item.app_id)
        if task is None or snapshot is None or item.context_sealed is None:
            await self._finish(
                item, status="failed", error=("not_runnable", "the task can no longer run")
            )
            return
        try:
            raw = self.privacy.decrypt_text(CONTEXT_PURPOSE, item.app_id, item.context_sealed)
            ctx = task.context.model_validate_json(raw)
        except (ValueError, ValidationError):
            await self._finish(
                item, status="failed", error=("not_runnable", "the task context is unreadable")
            )
            return
        deps = TaskDeps(
            providers=self.providers,
            tenant=worker_tenant(snapshot),
            task_id=item.task_id,
            base_url=item.base_url or settings.public_base_url or DEFAULT_BASE_URL,
            attempt=item.attempts,
        )
        can_retry = item.attempts < settings.bot_max_attempts
        delay = retry_delay_seconds(settings.bot_retry_base_seconds, item.attempts)
        if task.resumable is not None and task.resumable(ctx, settings):
            await self._run_resumable(item, task, ctx, deps, can_retry, delay)
            return
        try:
            result = await run_bounded(task, ctx, deps, settings.bot_timeout_seconds)
        except TaskTimedOut:
            message = f"the task did not finish within {settings.bot_timeout_seconds:g} s"
            if can_retry:
                await self._finish(
                    item, status="queued", error=("task_timeout", message), retry_in_seconds=delay
                )
            else:
                await self._finish(item, status="timeout", error=("task_timeout", message))
            return
        except TaskFailed as exc:
            if exc.transient and can_retry:
                await self._finish(
                    item, status="queued", error=(exc.code, exc.detail), retry_in_seconds=delay
                )
            else:
                await self._finish(item, status="failed", error=(exc.code, exc.detail))
            return
        except ProblemError as exc:  # TaskRejected: the configuration changed since queueing
            await self._finish(item, status="failed", error=(exc.code, exc.detail))
            return
        await self._finish(item, status="success", result=result)
        log.info("bot_task_done", task_type=item.task_type, tenant=item.app_id)

    async def _run_resumable(
        self,
        item: ClaimedTask,
        task: TaskType[Any],
        ctx: Any,
        deps: TaskDeps,
        can_retry: bool,
        delay: float,
    ) -> None:
        """A broadcast: resumes from its journal, bounded by PUSH_BROADCAST_MAX_SECONDS since it
        first started; every outcome is written only while the task is still `running` (a
        DELETE may have cancelled it), and the journal keeps counts only once it is final."""
        settings = self.settings
        saved: dict[str, Any] = orjson.loads(item.progress_json) if item.progress_json else {}
        began = float(saved.setdefault("began", time.time()))
        journal = TaskJournal(
            self.sessionmaker,
            VerifiedAppId(item.app_id),
            item.task_id,
            item.attempts,
            lease_seconds(settings),
            saved,
        )
        deps.journal = journal
        remaining = settings.push_broadcast_max_seconds - (time.time() - began)

        def final() -> dict[str, Any]:
            return {"done": progress_counts(journal.saved) or {}}

        def counts() -> dict[str, Any]:
            return {**(progress_counts(journal.saved) or {}), "broadcast": True}

        status, result, error = "success", None, None
        try:
            if remaining <= 0:
                raise TaskTimedOut
            result = await run_bounded(task, ctx, deps, remaining)
        except TaskTimedOut:
            limit = f"{settings.push_broadcast_max_seconds:g}"
            status, error = "timeout", ("task_timeout", f"the broadcast ran past {limit} s")
        except TaskCancelled:
            status = "cancelled"
        except TaskLost:
            log.info("bot_task_taken_over", task_type=item.task_type, tenant=item.app_id)
            return
        except TaskFailed as exc:
            if exc.transient and can_retry:  # resumes from the journal on the next attempt
                await self._finish(
                    item,
                    status="queued",
                    error=(exc.code, exc.detail),
                    retry_in_seconds=delay,
                    only_status="running",
                )
                return
            status, error = "failed", (exc.code, exc.detail)
        except ProblemError as exc:
            status, error = "failed", (exc.code, exc.detail)
        if status != "cancelled":
            written = await self._finish(
                item,
                status=status,
                result=result if result is not None else counts(),
                error=error,
                only_status="running",
                progress=final(),
            )
            if written:
                log.info("bot_task_done", task_type=item.task_type, tenant=item.app_id)
                return
        # Cancelled (seen at a page boundary, or after the last page): keep what was done.
        await self._finish(
            item, status="cancelled", result=counts(), only_status="cancelled", progress=final()
        )

    async def shutdown(self) -> None:
        """Give running tasks a grace period, then cancel them (claiming has stopped).

        A cancelled task keeps status running; its lease runs out and another worker re-runs it.
        """
        if self.running:
            _done, pending = await asyncio.wait(set(self.running), timeout=SHUTDOWN_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
