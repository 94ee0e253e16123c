"""Bots API (secret key): run outbound tasks now or queue them, and read their outcome."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.bots.schemas import ExecuteIn, TaskAccepted, TaskOut
from stateless.bots.service import BotService
from stateless.bots.wiring import bot_service
from stateless.container import Container
from stateless.deps import API_V1, KeyedService
from stateless.kit.context import TenantContext
from stateless.kit.errors import PROBLEM_CONTENT_TYPE

router = APIRouter(prefix=f"{API_V1}/bots", tags=["bots"])

_PROBLEM: dict[str, Any] = {"content": {PROBLEM_CONTENT_TYPE: {}}}


def _build(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> BotService:
    """Task records are written in their own short transactions; the request's is unused."""
    base_url = container.settings.public_base_url or str(request.base_url)
    return bot_service(container, tenant, base_url.rstrip("/"))


Service = Annotated[BotService, Depends(KeyedService(_build, "secret"), scope="function")]


@router.post(
    "/execute",
    name="bots.execute",
    response_model=TaskAccepted,
    responses={
        202: {"model": TaskAccepted, "description": "Queued (mode async)"},
        400: {**_PROBLEM, "description": "Unknown task_type (`allowed` lists the known ones)"},
        409: {**_PROBLEM, "description": "Idempotency-Key reused with another body"},
        413: {**_PROBLEM, "description": "context over 1 MiB"},
        422: {**_PROBLEM, "description": "context does not fit the task type"},
        502: {**_PROBLEM, "description": "The provider failed (sanitized detail)"},
        504: {**_PROBLEM, "description": "Over BOT_TIMEOUT_SECONDS (code task_timeout)"},
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


@router.get("/tasks/{task_id}", name="bots.task", response_model=TaskOut)
async def read_task(task_id: str, service: Service) -> TaskOut:
    """A task's status (`queued`, `running`, `success`, `failed`, `timeout`) with its result or
    error. Unknown, expired and other apps' task ids answer 404."""
    return await service.get_task(task_id)
