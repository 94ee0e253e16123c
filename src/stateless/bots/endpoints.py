"""Bots API (secret key): run outbound tasks now or queue them, and read their outcome."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from stateless.bots.schemas import ExecuteIn, TaskAccepted, TaskOut
from stateless.bots.service import BotService
from stateless.bots.wiring import bot_service
from stateless.deps import API_V1, ContainerDep
from stateless.kit.errors import PROBLEM_CONTENT_TYPE
from stateless.tenants.auth import SecretKeyTenant
from stateless.tenants.schemas import TenantContext

router = APIRouter(prefix=f"{API_V1}/bots", tags=["bots"])

_PROBLEM: dict[str, Any] = {"content": {PROBLEM_CONTENT_TYPE: {}}}


def _service(request: Request, container: ContainerDep, tenant: TenantContext) -> BotService:
    base_url = container.settings.public_base_url or str(request.base_url)
    return bot_service(container, tenant, base_url.rstrip("/"))


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
    request: Request,
    tenant: SecretKeyTenant,
    container: ContainerDep,
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
    outcome = await _service(request, container, tenant).execute(body, idempotency_key)
    if outcome.problem is not None:
        raise outcome.problem
    return JSONResponse(outcome.body, status_code=outcome.status_code, headers=outcome.headers)


@router.get("/tasks/{task_id}", name="bots.task", response_model=TaskOut)
async def read_task(
    task_id: str, request: Request, tenant: SecretKeyTenant, container: ContainerDep
) -> TaskOut:
    """A task's status (`queued`, `running`, `success`, `failed`, `timeout`) with its result or
    error. Unknown, expired and other apps' task ids answer 404."""
    return await _service(request, container, tenant).get_task(task_id)
