"""Web Push API: the VAPID key and subscriptions (pk or sk, called by the page), push (sk)."""

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
from stateless.kit.data.context import TenantContext
from stateless.kit.web.openapi import problems
from stateless.lifecycle.policy import TtlOutOfRange
from stateless.webpush.schemas import (
    SubscribeIn,
    SubscribeOut,
    UnsubscribeIn,
    UnsubscribeOut,
    VapidPublicKeyOut,
    WebPushIn,
    WebPushOut,
)
from stateless.webpush.service import (
    EndpointNotAllowed,
    InvalidKeys,
    PushPayloadTooLarge,
    SubscriptionExpired,
    SubscriptionService,
    WebPushNotConfigured,
    WebPushService,
    public_key_of,
)

router = api_router(f"{API_V1}/web", ["web push"])


def _subscriptions(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> SubscriptionService:
    return SubscriptionService(
        session,
        tenant,
        container.privacy,
        container.lifecycle.policy,
        container.settings.webpush_allow_private_networks,
    )


@dataclass(frozen=True)
class Pusher:
    """A push now (the service) or, for a broadcast, queued (the queue)."""

    service: WebPushService
    broadcasts: BroadcastQueue
    sync_max: int


def _push(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> Pusher:
    client = container.webpush
    service = WebPushService(
        session, tenant, container.privacy, client.sender, client.signer, container.metrics
    )
    queue = BroadcastQueue(
        session,
        tenant,
        container.privacy,
        container.lifecycle.policy,
        container.background.task_wakeup,
    )
    return Pusher(service, queue, container.settings.push_sync_max)


Subscriptions = Annotated[SubscriptionService, Depends(KeyedService(_subscriptions, "any"))]
Push = Annotated[Pusher, Depends(KeyedService(_push, "secret"))]


@router.get(
    "/vapid-public-key",
    name="web.vapid_public_key",
    summary="Get the VAPID public key",
    response_model=VapidPublicKeyOut,
    responses=problems(WebPushNotConfigured),
)
async def vapid_public_key(service: Subscriptions) -> VapidPublicKeyOut:
    """The app's VAPID public key: pass it as `applicationServerKey` to pushManager.subscribe.

    409 `webpush_not_configured` until the operator runs
    `stateless tenants configure APP_ID --webpush-generate-keys`.
    """
    return VapidPublicKeyOut(public_key=public_key_of(service.tenant))


@router.post(
    "/subscribe",
    name="web.subscribe",
    summary="Subscribe a browser to Web Push",
    response_model=SubscribeOut,
    responses=problems(EndpointNotAllowed, InvalidKeys, SubscriptionExpired, TtlOutOfRange),
)
async def subscribe(body: SubscribeIn, service: Subscriptions) -> SubscribeOut:
    """Store (or replace) this subscriber's push subscription: send `PushSubscription.toJSON()`.

    Kept `ttl_seconds` (default 30 d, max 60 d, never past `expirationTime`); the endpoint and
    keys are encrypted, the subscriber id kept only as a keyed hash. The endpoint must be an https
    URL of a public host (422 `endpoint_not_allowed`); keys that are not a P-256 point and a
    16-byte secret answer 422 `invalid_subscription_keys`.
    """
    expires_at = await service.subscribe(body)
    return SubscribeOut(tenant=service.tenant.app_id, expires_at=expires_at)


@router.post(
    "/unsubscribe",
    name="web.unsubscribe",
    summary="Unsubscribe a browser from Web Push",
    response_model=UnsubscribeOut,
)
async def unsubscribe(body: UnsubscribeIn, service: Subscriptions) -> UnsubscribeOut:
    """Forget this subscriber's subscription now. Unknown subscribers answer the same."""
    await service.unsubscribe(body.subscriber_id)
    return UnsubscribeOut()


@router.post(
    "/push",
    name="web.push",
    summary="Send a Web Push notification",
    response_model=WebPushOut,
    responses={
        202: {"model": TaskQueued, "description": "A broadcast, queued as a resumable job"},
        **problems(WebPushNotConfigured, PushPayloadTooLarge),
    },
)
async def push(body: WebPushIn, pusher: Push) -> WebPushOut | JSONResponse:
    """Send one notification to `subscriber_ids`, or to every live subscriber with `all`.

    Each message is encrypted for its subscription (RFC 8291) and signed with the app's VAPID key
    (RFC 8292). Subscriptions the push service reports gone (404, 410) are deleted (`removed`);
    429 and 5xx are retried after `Retry-After`. Up to PUSH_SYNC_MAX ids (default 1,000) are sent
    now: 200 with counts and `results` naming each listed subscriber id.

    `all`, or more ids, is a broadcast: 202 `{"status": "queued", "task_id", ...}` at once. The
    job pages through the subscribers, resumes after a worker restart, and is bounded by
    PUSH_BROADCAST_MAX_SECONDS (default 1 h). Watch its counts (`progress`) at
    GET /bots/tasks/{task_id}; stop it with DELETE /bots/tasks/{task_id}.

    Checked before anything is sent or queued: the app's VAPID keys (409
    `webpush_not_configured`) and the payload (over 4096 bytes on the wire: 413).
    """
    if body.is_broadcast(pusher.sync_max):
        pusher.service.check(body)
        return await pusher.broadcasts.queue("web", body.model_dump(mode="json", exclude_none=True))
    return await pusher.service.push(body)
