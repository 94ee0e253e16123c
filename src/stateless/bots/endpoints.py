"""Bots API (secret key): run outbound tasks now or queue them, and read their outcome."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.bots.idempotency import IdempotencyInProgress, IdempotencyKeyReused
from stateless.bots.outbound import TargetRefusedProblem
from stateless.bots.schemas import ExecuteIn, TaskAccepted, TaskOut
from stateless.bots.service import (
    BotService,
    ContextTooLarge,
    TaskNotCancellable,
    TaskNotFound,
    TaskTimeout,
    UnknownTaskType,
)
from stateless.bots.tasks.data_export import UnknownKind
from stateless.bots.tasks.email import NoRecipient, TemplateUnsupported
from stateless.bots.tasks.email_campaign import NoContent
from stateless.bots.tasks.push import NoApnsKey
from stateless.bots.tasks.report_generation import RangeTooLong
from stateless.bots.tasks.social_post import MastodonNotConfigured
from stateless.bots.tasks.webhook import WebhookNotConfigured
from stateless.bots.wiring import bot_service
from stateless.container import Container
from stateless.deps import API_V1, KeyedService, api_router
from stateless.kit.data.context import TenantContext
from stateless.kit.web.errors import BadGateway, Unprocessable
from stateless.kit.web.openapi import problems

router = api_router(f"{API_V1}/bots", ["bots"])


def _build(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> BotService:
    """Queueing writes on the request's session (one lone INSERT); sync runs write their task
    records in short transactions of their own."""
    base_url = container.settings.public_base_url or str(request.base_url)
    return bot_service(container, tenant, base_url.rstrip("/"), session)


Service = Annotated[BotService, Depends(KeyedService(_build, "secret"))]


@router.post(
    "/execute",
    name="bots.execute",
    summary="Run a task",
    response_model=TaskAccepted,
    responses={
        202: {"model": TaskAccepted, "description": "Queued (mode async)"},
        **problems(
            UnknownTaskType,
            IdempotencyKeyReused,
            IdempotencyInProgress,
            ContextTooLarge,
            Unprocessable,
            NoRecipient,
            NoContent,
            TemplateUnsupported,
            WebhookNotConfigured,
            MastodonNotConfigured,
            NoApnsKey,
            UnknownKind,
            RangeTooLong,
            TargetRefusedProblem,
            BadGateway,
            TaskTimeout,
        ),
    },
)
async def execute_task(
    body: ExecuteIn,
    service: Service,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Same key and body within 24 h: the first answer again, sent once.",
        ),
    ] = None,
) -> JSONResponse:
    """Run a task: `sync` (default) answers 200 with the result, `async` answers 202 with a
    task id to poll at GET /tasks/{task_id}. Task records expire (default 48 h, max 7 d) and
    never keep addresses or tokens."""
    outcome = await service.execute(body, idempotency_key)
    if outcome.problem is not None:
        raise outcome.problem
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    status = 202 if outcome.queued else 200
    return JSONResponse(outcome.body, status_code=status, headers=headers)


@router.get(
    "/tasks/{task_id}",
    name="bots.task",
    summary="Read a task",
    response_model=TaskOut,
    responses=problems(TaskNotFound),
)
async def read_task(task_id: str, service: Service) -> TaskOut:
    """A task's status (`queued`, `running`, `success`, `failed`, `timeout`, `cancelled`) with
    its result or error. A broadcast (a push to `all` or to more ids than PUSH_SYNC_MAX) shows
    live `progress`: sent, failed and removed so far, out of `total`. Unknown, expired and other
    apps' task ids answer 404."""
    return await service.get_task(task_id)


@router.delete(
    "/tasks/{task_id}",
    name="bots.cancel_task",
    summary="Cancel a task",
    response_model=TaskOut,
    responses={
        202: {"model": TaskOut, "description": "A running broadcast: it stops after its page"},
        **problems(TaskNotFound, TaskNotCancellable),
    },
)
async def cancel_task(task_id: str, service: Service) -> JSONResponse:
    """Cancel a task: a queued one at once (200), a running broadcast after the page it is
    sending (202; its counts so far stay in `progress` and `result`). Cancelling again answers
    200; a finished task answers 409 `task_not_cancellable`; unknown ids 404."""
    task, was_running = await service.cancel_task(task_id)
    return JSONResponse(task.model_dump(mode="json"), status_code=202 if was_running else 200)
