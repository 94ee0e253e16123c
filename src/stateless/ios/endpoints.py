"""iOS API: device tokens (pk or sk, called by the app) and push (sk, called by your server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.bots.broadcasts import BroadcastQueue
from stateless.bots.schemas import TaskQueued
from stateless.container import Container
from stateless.deps import API_V1, KeyedService, api_router
from stateless.ios.schemas import (
    PushIn,
    PushOut,
    RegisterTokenIn,
    RegisterTokenOut,
    UnregisterTokenIn,
    UnregisterTokenOut,
)
from stateless.ios.service import (
    ApnsNotConfigured,
    ApnsUnreachable,
    DeviceTokenService,
    PushService,
)
from stateless.kit.data.context import TenantContext
from stateless.kit.web.openapi import problems
from stateless.lifecycle.policy import TtlOutOfRange

router = api_router(f"{API_V1}/ios", ["ios"])


def _tokens(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> DeviceTokenService:
    return DeviceTokenService(session, tenant, container.privacy, container.lifecycle.policy)


@dataclass(frozen=True)
class Pusher:
    """A push now (the service) or, for a broadcast, queued (the queue)."""

    service: PushService
    broadcasts: BroadcastQueue
    sync_max: int


def _push(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> Pusher:
    service = PushService(session, tenant, container.privacy, container.apns, container.metrics)
    queue = BroadcastQueue(
        session,
        tenant,
        container.privacy,
        container.lifecycle.policy,
        container.background.task_wakeup,
    )
    return Pusher(service, queue, container.settings.push_sync_max)


Tokens = Annotated[DeviceTokenService, Depends(KeyedService(_tokens, "any"))]
Push = Annotated[Pusher, Depends(KeyedService(_push, "secret"))]


@router.post(
    "/register-token",
    name="ios.register_token",
    summary="Register an APNs device token",
    response_model=RegisterTokenOut,
    responses=problems(TtlOutOfRange),
)
async def register_token(body: RegisterTokenIn, service: Tokens) -> RegisterTokenOut:
    """Store (or replace) this device's APNs token for `ttl_seconds` (default 30 d, max 60 d).

    Call it on every launch: registering again replaces the token and extends the expiry.
    The token is kept encrypted and the device id only as a keyed hash.
    """
    expires_at = await service.register(body)
    return RegisterTokenOut(tenant=service.tenant.app_id, expires_at=expires_at)


@router.post(
    "/unregister-token",
    name="ios.unregister_token",
    summary="Unregister an APNs device token",
    response_model=UnregisterTokenOut,
)
async def unregister_token(body: UnregisterTokenIn, service: Tokens) -> UnregisterTokenOut:
    """Forget this device's token now. Unknown devices answer the same (idempotent)."""
    await service.unregister(body.device_id)
    return UnregisterTokenOut()


@router.post(
    "/push",
    name="ios.push",
    summary="Send an APNs push",
    response_model=PushOut,
    responses={
        202: {"model": TaskQueued, "description": "A broadcast, queued as a resumable job"},
        **problems(ApnsNotConfigured, ApnsUnreachable),
    },
)
async def push(body: PushIn, pusher: Push) -> PushOut | JSONResponse:
    """Send one notification over APNs to `device_ids`, or to every live device with `all`.

    Up to PUSH_SYNC_MAX ids (default 1,000) are sent now: 200 with `sent`, `failed` and
    `removed` device counts and `results` naming each listed device id. Tokens APNs reports dead
    are deleted (`removed`).

    `all`, or more ids, is a broadcast: 202 `{"status": "queued", "task_id", ...}` at once. The
    job pages through the devices, resumes after a worker restart, and is bounded by
    PUSH_BROADCAST_MAX_SECONDS (default 1 h). Watch its counts (`progress`) at
    GET /bots/tasks/{task_id}; stop it with DELETE /bots/tasks/{task_id}.

    Needs the app's APNs key (409 `apns_not_configured`, before anything is sent or queued).
    """
    if body.is_broadcast(pusher.sync_max):
        pusher.service.check(body)
        return await pusher.broadcasts.queue("ios", body.model_dump(mode="json", exclude_none=True))
    return await pusher.service.push(body)
