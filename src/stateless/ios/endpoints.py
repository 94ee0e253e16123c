"""iOS API: device tokens (pk or sk, called by the app) and push (sk, called by your server)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from stateless.deps import API_V1, ContainerDep, SessionDep
from stateless.ios.schemas import (
    PushIn,
    PushOut,
    RegisterTokenIn,
    RegisterTokenOut,
    UnregisterTokenIn,
    UnregisterTokenOut,
)
from stateless.ios.service import DeviceTokenService, PushService
from stateless.tenants.auth import AnyKeyTenant, SecretKeyTenant

router = APIRouter(prefix=f"{API_V1}/ios", tags=["ios"])


async def _tokens(
    session: SessionDep, tenant: AnyKeyTenant, container: ContainerDep
) -> DeviceTokenService:
    return DeviceTokenService(
        session, tenant, container.kit, container.services["lifecycle"].policy
    )


async def _push(
    session: SessionDep, tenant: SecretKeyTenant, container: ContainerDep
) -> PushService:
    return PushService(
        session, tenant, container.kit, container.services["apns"], container.metrics
    )


Tokens = Annotated[DeviceTokenService, Depends(_tokens)]
Push = Annotated[PushService, Depends(_push)]


@router.post("/register-token", name="ios.register_token", response_model=RegisterTokenOut)
async def register_token(
    body: RegisterTokenIn, service: Tokens, tenant: AnyKeyTenant
) -> RegisterTokenOut:
    """Store (or replace) this device's APNs token for `ttl_seconds` (default 30 d, max 60 d).

    Call it on every launch: registering again replaces the token and extends the expiry.
    The token is kept encrypted and the device id only as a keyed hash.
    """
    expires_at = await service.register(body)
    return RegisterTokenOut(tenant=tenant.app_id, expires_at=expires_at)


@router.post("/unregister-token", name="ios.unregister_token", response_model=UnregisterTokenOut)
async def unregister_token(body: UnregisterTokenIn, service: Tokens) -> UnregisterTokenOut:
    """Forget this device's token now. Unknown devices answer the same (idempotent)."""
    await service.unregister(body.device_id)
    return UnregisterTokenOut()


@router.post("/push", name="ios.push", response_model=PushOut)
async def push(body: PushIn, service: Push) -> PushOut:
    """Send one notification over APNs to `device_ids`, or to every live device with `all`.

    `sent`, `failed` and `removed` count devices; tokens APNs reports dead are deleted
    (`removed`). `results` names each listed device id; with `all` it is empty, because device
    ids are stored only as keyed hashes. Needs the app's APNs key (409 `apns_not_configured`).
    """
    return await service.push(body)
