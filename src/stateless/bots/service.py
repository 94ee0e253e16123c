"""Bot task rules: validation, sync runs under the timeout, async queueing (idempotency keys:
bots/idempotency.py).

Task records are written in their own short transactions (not the request's): a slow provider
must never hold a database transaction, or SQLite's write lock, for up to BOT_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import secrets
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.bots.idempotency import PENDING_ABANDON_GRACE_SECONDS, IdempotencyKeys, Outcome
from stateless.bots.models import BotTask
from stateless.bots.progress import progress_counts
from stateless.bots.repository import BotTaskRepository
from stateless.bots.runner import (
    CONTEXT_PURPOSE,
    TaskTimedOut,
    lease_seconds,
    result_text,
    run_bounded,
)
from stateless.bots.schemas import (
    MAX_CONTEXT_BYTES,
    ExecuteIn,
    TaskAccepted,
    TaskError,
    TaskOut,
    TaskProgress,
)
from stateless.bots.tasks import registry
from stateless.bots.tasks.base import TaskDeps, TaskFailed, TaskProviders, TaskType
from stateless.kit.data.db import session_scope, utcnow
from stateless.kit.web.errors import (
    BadRequest,
    Conflict,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    Unprocessable,
)
from stateless.tenants.schemas import TenantContext

log = structlog.get_logger("stateless.bots")


class ContextTooLarge(PayloadTooLarge):
    code = "context_too_large"


class UnknownTaskType(BadRequest):
    code, title = "unknown_task_type", "Unknown task type"


class TaskTimeout(GatewayTimeout):
    code, title = "task_timeout", "Task timed out"


class TaskNotFound(NotFound):
    code, title = "task_not_found", "Task not found"


class TaskNotCancellable(Conflict):
    code, title = "task_not_cancellable", "This task can no longer be cancelled"


def _context_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": ["body", "context", *[str(p) for p in error.get("loc", ())]],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]


class BotService:
    def __init__(
        self,
        tenant: TenantContext,
        base_url: str,
        *,
        providers: TaskProviders,
        wakeup: asyncio.Event,
        session: AsyncSession | None = None,
    ) -> None:
        self.providers = providers
        # The request's session: queueing is one lone INSERT, which runs on it without a
        # transaction (kit/data/tenancy.py); sync runs and reads use short sessions of their own.
        self.session = session
        self.settings = providers.settings
        self.metrics = providers.metrics
        self.tenant = tenant
        self.base_url = base_url
        self.kit = providers.kit
        self.maker = providers.sessionmaker
        self.policy = providers.lifecycle.policy
        # Set after a queueing: a task worker in this process looks now, not at its next poll.
        self.wakeup = wakeup

    # -- validation -------------------------------------------------------------------------

    def resolve(self, body: ExecuteIn) -> tuple[TaskType[Any], Any]:
        tasks = registry()
        task = tasks.get(body.task_type)
        if task is None:
            allowed = sorted(tasks)
            raise UnknownTaskType(
                f"Unknown task_type; allowed: {', '.join(allowed)}", extra={"allowed": allowed}
            )
        if len(orjson.dumps(body.context)) > MAX_CONTEXT_BYTES:
            raise ContextTooLarge(f"context exceeds {MAX_CONTEXT_BYTES} bytes once encoded")
        try:
            ctx = task.context.model_validate(body.context)
        except ValidationError as exc:
            raise Unprocessable(
                f"The context does not fit task type {task.name}",
                extra={"errors": _context_errors(exc)},
            ) from None
        return task, ctx

    def _deps(self, task_id: str) -> TaskDeps:
        return TaskDeps(self.providers, self.tenant, task_id, self.base_url)

    # -- execute ----------------------------------------------------------------------------

    async def execute(self, body: ExecuteIn, idempotency_key: str | None) -> Outcome:
        """Run or queue the task; with an Idempotency-Key, a repeat gets the first outcome."""
        task, ctx = self.resolve(body)
        expires_at = self.policy.expires_at("bot_tasks", body.ttl_seconds, utcnow())
        task_id = secrets.token_hex(16)
        if task.prepare is not None:
            await task.prepare(ctx, self._deps(task_id))
        if idempotency_key is None:
            return await self._execute(task, ctx, body, task_id, expires_at)
        keys = IdempotencyKeys(
            self.maker,
            self.kit,
            self.policy,
            self.tenant,
            abandon_after_seconds=self.settings.bot_timeout_seconds + PENDING_ABANDON_GRACE_SECONDS,
        )
        key_hash = keys.key_hash(idempotency_key)
        earlier = await keys.claim(key_hash, body)
        if earlier is not None:
            return earlier
        try:
            outcome = await self._execute(task, ctx, body, task_id, expires_at)
        except BaseException:
            await keys.release(key_hash)
            raise
        await keys.store(key_hash, outcome)
        return outcome

    async def _execute(
        self, task: TaskType[Any], ctx: Any, body: ExecuteIn, task_id: str, expires_at: datetime
    ) -> Outcome:
        if body.mode == "async":
            return await self._enqueue(task, ctx, task_id, expires_at)
        return await self._run_sync(task, ctx, task_id, expires_at)

    def _accepted(
        self, status: str, task: TaskType[Any], task_id: str, expires_at: datetime, result: Any
    ) -> dict[str, Any]:
        return TaskAccepted.model_validate(
            {
                "status": status,
                "task_id": task_id,
                "task_type": task.name,
                "result": result,
                "tenant": self.tenant.app_id,
                "expires_at": expires_at,
            }
        ).model_dump(mode="json", exclude_none=status == "queued")

    async def _enqueue(
        self, task: TaskType[Any], ctx: Any, task_id: str, expires_at: datetime
    ) -> Outcome:
        now = utcnow()
        sealed = self.kit.encrypt_text(CONTEXT_PURPOSE, self.tenant.app_id, ctx.model_dump_json())
        async with AsyncExitStack() as stack:
            session = self.session
            if session is None:
                session = await stack.enter_async_context(session_scope(self.maker))
            await BotTaskRepository(session, self.tenant).insert(
                {
                    "task_id": task_id,
                    "task_type": task.name,
                    "mode": "async",
                    "status": "queued",
                    "context_sealed": sealed,
                    "base_url": self.base_url[:512],
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "expires_at": expires_at,
                }
            )
        self.metrics.tasks.labels(task_type=task.name, outcome="queued").inc()
        self.wakeup.set()
        return Outcome(queued=True, body=self._accepted("queued", task, task_id, expires_at, None))

    async def _run_sync(
        self, task: TaskType[Any], ctx: Any, task_id: str, expires_at: datetime
    ) -> Outcome:
        now = utcnow()
        async with session_scope(self.maker) as session:
            BotTaskRepository(session, self.tenant).add(
                BotTask(
                    task_id=task_id,
                    task_type=task.name,
                    mode="sync",
                    status="running",
                    attempts=1,
                    started_at=now,
                    lease_expires_at=now + timedelta(seconds=lease_seconds(self.settings)),
                ),
                expires_at,
            )
        timeout = self.settings.bot_timeout_seconds
        problem: ProblemError | None = None
        result: dict[str, Any] | None = None
        try:
            result = await run_bounded(task, ctx, self._deps(task_id), timeout)
        except TaskTimedOut:
            status = "timeout"
            problem = TaskTimeout(f"The task did not finish within {timeout:g} seconds")
        except TaskFailed as exc:
            status = "failed"
            problem = exc.problem(exc.detail)
        except ProblemError as exc:
            status, problem = "failed", exc
        else:
            status = "success"
        values: dict[str, Any] = {
            "status": status,
            "lease_expires_at": None,
            "finished_at": utcnow(),
        }
        if result is not None:
            values["result_json"] = result_text(result)
        if problem is not None:
            values.update(error_code=problem.code, error_detail=problem.detail[:500])
        async with session_scope(self.maker) as session:
            await BotTaskRepository(session, self.tenant).finish(task_id, values)
        self.metrics.tasks.labels(task_type=task.name, outcome=status).inc()
        if problem is not None:
            log.info("bot_task_failed", task_type=task.name, kind=problem.code)
            return Outcome(problem=problem)
        return Outcome(body=self._accepted("success", task, task_id, expires_at, result))

    # -- read -------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskOut:
        async with session_scope(self.maker) as session:
            row = await BotTaskRepository(session, self.tenant).by_id(task_id[:64])
        if row is None:
            raise TaskNotFound(f"No task {task_id[:64]}")
        return self._task_out(row)

    async def cancel_task(self, task_id: str) -> tuple[TaskOut, bool]:
        """Cancel a queued task (at once) or a running `push` (its broadcast stops after the
        page in flight); (the task, whether it was still running). Cancelling twice answers the
        same; a finished task, or a running one that cannot stop midway, is a 409."""
        now = utcnow()
        async with session_scope(self.maker) as session:
            repo = BotTaskRepository(session, self.tenant)
            row = await repo.by_id(task_id[:64])
            if row is None:
                raise TaskNotFound(f"No task {task_id[:64]}")
            running = row.status == "running"
            if row.status == "queued":
                await repo.finish(
                    row.task_id,
                    {
                        "status": "cancelled",
                        "finished_at": now,
                        "context_sealed": None,
                        "lease_expires_at": None,
                        "next_attempt_at": None,
                    },
                    status="queued",
                )
            elif running and row.mode == "async" and row.task_type == "push":
                # The worker sees it at its next page boundary and writes the final counts.
                await repo.finish(row.task_id, {"status": "cancelled"}, status="running")
            elif row.status != "cancelled":
                raise TaskNotCancellable(
                    f"The task is {row.status}; only queued tasks and running broadcasts stop"
                )
            found = row.task_id
            session.expire_all()  # read back what the UPDATE wrote, not the identity map
            row = await repo.by_id(found)
        assert row is not None
        return self._task_out(row), running

    def _task_out(self, row: BotTask) -> TaskOut:
        counts = progress_counts(orjson.loads(row.progress_json) if row.progress_json else None)
        return TaskOut(
            progress=TaskProgress(**counts) if counts else None,
            task_id=row.task_id,
            task_type=row.task_type,
            mode="async" if row.mode == "async" else "sync",
            status=row.status,
            attempts=row.attempts,
            result=orjson.loads(row.result_json) if row.result_json else None,
            error=TaskError(code=row.error_code, detail=row.error_detail or "")
            if row.error_code
            else None,
            created_at=row.created_at,
            finished_at=row.finished_at,
            next_attempt_at=row.next_attempt_at if row.status == "queued" else None,
            expires_at=row.expires_at,
            tenant=self.tenant.app_id,
        )
