"""Bot task rules: validation, idempotency, sync runs under the timeout, async queueing.

Task records are written in their own short transactions (not the request's): a slow provider
must never hold a database transaction, or SQLite's write lock, for up to BOT_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from stateless.bots.models import BotIdempotencyRecord, BotTask
from stateless.bots.repository import BotTaskRepository, IdempotencyRepository
from stateless.bots.runner import (
    CONTEXT_PURPOSE,
    TaskTimedOut,
    lease_seconds,
    result_text,
    run_bounded,
)
from stateless.bots.schemas import MAX_CONTEXT_BYTES, ExecuteIn, TaskAccepted, TaskError, TaskOut
from stateless.bots.tasks import registry
from stateless.bots.tasks.base import TaskDeps, TaskFailed, TaskType
from stateless.kit.db import session_scope, utcnow
from stateless.kit.errors import (
    BadGateway,
    BadRequest,
    Conflict,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    Unprocessable,
    problem_body,
)
from stateless.tenants.schemas import TenantContext

if TYPE_CHECKING:
    from stateless.container import Container

log = structlog.get_logger("stateless.bots")

IDEMPOTENCY_KEY_PURPOSE = "bots-idempotency-key"
IDEMPOTENCY_BODY_PURPOSE = "bots-idempotency-body"
IDEMPOTENCY_RESPONSE_PURPOSE = "bots-idempotency-response"
# A pending claim older than this belongs to a request that died; a retry may take it over.
PENDING_ABANDON_GRACE_SECONDS = 60.0


class UnknownTaskType(BadRequest):
    code = "unknown_task_type"


class TaskTimeout(GatewayTimeout):
    code = "task_timeout"


class TaskNotFound(NotFound):
    code = "task_not_found"


class ReplayedProblem(ProblemError):
    """A stored error answer of an earlier request with the same Idempotency-Key."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.status = int(body["status"])
        self.code = str(body["code"])
        known = {"type", "title", "status", "detail", "code", "request_id"}
        super().__init__(
            str(body.get("detail") or self.title),
            headers={"Idempotent-Replayed": "true"},
            extra={k: v for k, v in body.items() if k not in known},
        )


@dataclass
class Outcome:
    """What /execute answers: a body with its status, or a problem raised after the task ran."""

    status_code: int
    body: dict[str, Any] = field(default_factory=dict)
    problem: ProblemError | None = None
    headers: dict[str, str] = field(default_factory=dict)


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
    def __init__(self, container: Container, tenant: TenantContext, base_url: str) -> None:
        self.container = container
        self.tenant = tenant
        self.base_url = base_url
        self.kit = container.kit
        self.maker = container.sessionmaker
        self.policy = container.services["lifecycle"].policy

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
            raise PayloadTooLarge(
                f"context exceeds {MAX_CONTEXT_BYTES} bytes once encoded"
            ).with_code("context_too_large")
        try:
            ctx = task.context.model_validate(body.context)
        except ValidationError as exc:
            raise Unprocessable(
                f"The context does not fit task type {task.name}",
                extra={"errors": _context_errors(exc)},
            ) from None
        return task, ctx

    def _deps(self, task_id: str) -> TaskDeps:
        return TaskDeps(self.container, self.tenant, task_id, self.base_url)

    # -- execute ----------------------------------------------------------------------------

    async def execute(self, body: ExecuteIn, idempotency_key: str | None) -> Outcome:
        task, ctx = self.resolve(body)
        expires_at = self.policy.expires_at("bot_tasks", body.ttl_seconds, utcnow())
        task_id = secrets.token_hex(16)
        if task.prepare is not None:
            await task.prepare(ctx, self._deps(task_id))
        if idempotency_key is None:
            return await self._execute(task, ctx, body, task_id, expires_at)
        key_hash = self.kit.keyed_hash(IDEMPOTENCY_KEY_PURPOSE, self.tenant.app_id, idempotency_key)
        canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        body_hash = self.kit.keyed_hash(IDEMPOTENCY_BODY_PURPOSE, self.tenant.app_id, canonical)
        earlier = await self._claim_key(key_hash, body_hash)
        if earlier is not None:
            return earlier
        try:
            outcome = await self._execute(task, ctx, body, task_id, expires_at)
        except BaseException:
            async with session_scope(self.maker) as session:
                await IdempotencyRepository(session, self.tenant).release(key_hash)
            raise
        await self._store_outcome(key_hash, outcome)
        return outcome

    async def _claim_key(self, key_hash: str, body_hash: str) -> Outcome | None:
        """Reserve the key (None), or answer with what the first request with it answered."""
        for _ in range(2):
            try:
                async with session_scope(self.maker) as session:
                    repo = IdempotencyRepository(session, self.tenant)
                    record = await repo.by_key(key_hash)
                    if record is not None:
                        earlier = self._replay(record, body_hash)
                        if earlier is not None:
                            return earlier
                        await repo.delete_where(BotIdempotencyRecord.key_hash == key_hash)
                    else:
                        await repo.drop_expired(key_hash)
                    repo.add(
                        BotIdempotencyRecord(
                            key_hash=key_hash, body_hash=body_hash, state="pending"
                        ),
                        self.policy.expires_at("idempotency", None, utcnow()),
                    )
                    await session.flush()
                return None
            except IntegrityError:
                continue  # a concurrent request took the key first: read what it left
        raise Conflict("A request with this Idempotency-Key is in progress").with_code(
            "idempotency_in_progress"
        )

    def _replay(self, record: BotIdempotencyRecord, body_hash: str) -> Outcome | None:
        """The stored answer; None if the record is an abandoned claim we may take over."""
        if record.body_hash != body_hash:
            raise Conflict("This Idempotency-Key was used with a different request body").with_code(
                "idempotency_key_reused"
            )
        if record.state != "done" or record.response_sealed is None:
            abandoned_at = record.created_at + timedelta(
                seconds=self.container.settings.bot_timeout_seconds + PENDING_ABANDON_GRACE_SECONDS
            )
            if utcnow() > abandoned_at:
                return None
            raise Conflict("A request with this Idempotency-Key is in progress").with_code(
                "idempotency_in_progress"
            )
        stored = orjson.loads(
            self.kit.decrypt(
                IDEMPOTENCY_RESPONSE_PURPOSE, self.tenant.app_id, record.response_sealed
            )
        )
        status = int(record.response_status or 200)
        if stored.get("problem"):
            return Outcome(status, problem=ReplayedProblem(stored["body"]))
        return Outcome(status, stored["body"], headers={"Idempotent-Replayed": "true"})

    async def _store_outcome(self, key_hash: str, outcome: Outcome) -> None:
        if outcome.problem is not None:
            p = outcome.problem
            stored = {
                "problem": True,
                "body": problem_body(p.status, code=p.code, detail=p.detail, extra=p.extra),
            }
        else:
            stored = {"problem": False, "body": outcome.body}
        sealed = self.kit.encrypt(
            IDEMPOTENCY_RESPONSE_PURPOSE, self.tenant.app_id, orjson.dumps(stored)
        )
        async with session_scope(self.maker) as session:
            await IdempotencyRepository(session, self.tenant).update_where(
                {
                    "state": "done",
                    "response_status": outcome.status_code,
                    "response_sealed": sealed,
                },
                BotIdempotencyRecord.key_hash == key_hash,
            )

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
        async with session_scope(self.maker) as session:
            BotTaskRepository(session, self.tenant).add(
                BotTask(
                    task_id=task_id,
                    task_type=task.name,
                    mode="async",
                    status="queued",
                    context_sealed=sealed,
                    base_url=self.base_url[:512],
                    attempts=0,
                    next_attempt_at=now,
                ),
                expires_at,
            )
        self.container.metrics.tasks.labels(task_type=task.name, outcome="queued").inc()
        worker = self.container.services.get("bots.worker")
        if worker is not None:
            worker.wake()
        return Outcome(202, self._accepted("queued", task, task_id, expires_at, None))

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
                    lease_expires_at=now + timedelta(seconds=lease_seconds(self.container)),
                ),
                expires_at,
            )
        timeout = self.container.settings.bot_timeout_seconds
        problem: ProblemError | None = None
        result: dict[str, Any] | None = None
        try:
            result = await run_bounded(task, ctx, self._deps(task_id), timeout)
        except TaskTimedOut:
            status = "timeout"
            problem = TaskTimeout(f"The task did not finish within {timeout:g} seconds")
        except TaskFailed as exc:
            status = "failed"
            if exc.status == 502:
                problem = BadGateway(exc.detail).with_code(exc.code)
            else:
                problem = Unprocessable(exc.detail).with_code(exc.code)
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
        self.container.metrics.tasks.labels(task_type=task.name, outcome=status).inc()
        if problem is not None:
            log.info("bot_task_failed", task_type=task.name, kind=problem.code)
            return Outcome(problem.status, problem=problem)
        return Outcome(200, self._accepted("success", task, task_id, expires_at, result))

    # -- read -------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskOut:
        async with session_scope(self.maker) as session:
            row = await BotTaskRepository(session, self.tenant).by_id(task_id[:64])
        if row is None:
            raise TaskNotFound(f"No task {task_id[:64]}")
        return TaskOut(
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
