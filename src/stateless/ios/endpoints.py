"""iOS API: device tokens (pk or sk, called by the app) and push (sk, called by your server)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

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
from stateless.kit.context import TenantContext
from stateless.kit.openapi import problems
from stateless.lifecycle.policy import TtlOutOfRange

router = api_router(f"{API_V1}/ios", ["ios"])


def _tokens(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> DeviceTokenService:
    return DeviceTokenService(session, tenant, container.privacy, container.lifecycle.policy)


def _push(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> PushService:
    return PushService(session, tenant, container.privacy, container.apns, container.metrics)


Tokens = Annotated[DeviceTokenService, Depends(KeyedService(_tokens, "any"))]
Push = Annotated[PushService, Depends(KeyedService(_push, "secret"))]


@router.post(
    "/register-token",
    name="ios.register_token",
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


@router.post("/unregister-token", name="ios.unregister_token", response_model=UnregisterTokenOut)
async def unregister_token(body: UnregisterTokenIn, service: Tokens) -> UnregisterTokenOut:
    """Forget this device's token now. Unknown devices answer the same (idempotent)."""
    await service.unregister(body.device_id)
    return UnregisterTokenOut()


@router.post(
    "/push",
    name="ios.push",
    response_model=PushOut,
    responses=problems(ApnsNotConfigured, ApnsUnreachable),
)
async def push(body: PushIn, service: Push) -> PushOut:
    """Send one notification over APNs to `device_ids`, or to every live device with `all`.

    `sent`, `failed` and `removed` count devices; tokens APNs reports dead are deleted
    (`removed`). `results` names each listed device id; with `all` it is empty, because device
    ids are stored only as keyed hashes. Needs the app's APNs key (409 `apns_not_configured`).
    """
    return await service.push(body)
