"""Subscriptions (subscribe, unsubscribe) and push: the rules between the API and push services.

Subscriber ids are stored only as keyed hashes and subscriptions (endpoint URL and keys) only
sealed, so pushing to `all` reports counts. Subscriptions a push service calls gone (404, 410)
are deleted as we go. Pushing streams subscribers from the database page by page into a fixed
pool of senders (kit/push/pushing.py), so memory and in-flight work stay flat however many there
are, and the next page is read while the previous one is on the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from prometheus_client import Counter as MetricCounter
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.kit.crypto.sealing import DecryptionError, PrivacyKit
from stateless.kit.data.db import utcnow
from stateless.kit.observe.metrics import Metrics
from stateless.kit.push.pushing import PushChannel, PushTally, SenderPool, Status
from stateless.kit.push.targets import TargetError, TargetNotAllowed, resolve_checked
from stateless.kit.web.errors import Conflict, PayloadTooLarge, Unprocessable
from stateless.lifecycle.policy import TtlPolicy
from stateless.tenants.schemas import TenantContext
from stateless.tenants.service import open_secrets
from stateless.webpush.crypto import (
    MAX_PLAINTEXT_BYTES,
    InvalidSubscriptionKey,
    UserAgentKeys,
    VapidKeys,
    VapidSigner,
    encrypt_payload,
    load_auth_secret,
    load_user_agent_key,
)
from stateless.webpush.repository import SubscriptionRow, WebPushSubscriptionRepository
from stateless.webpush.schemas import (
    SubscribeIn,
    WebPushIn,
    WebPushOut,
    WebPushResult,
)
from stateless.webpush.sender import Endpoint, EngineError, PushOutcome, WebPushSender

SUBSCRIBER_PURPOSE = "webpush-subscriber-id"
SUBSCRIPTION_PURPOSE = "webpush-subscription"
PUSH_BATCH_SIZE = 500
DNS_TIMEOUT_SECONDS = 3.0
DEFAULT_MESSAGE_TTL_SECONDS = 28 * 24 * 3600

log = structlog.get_logger("stateless.webpush")


class WebPushNotConfigured(Conflict):
    code, title = "webpush_not_configured", "Web Push is not configured for this app"


class EndpointNotAllowed(Unprocessable):
    code, title = "endpoint_not_allowed", "This push endpoint is not allowed"


class InvalidKeys(Unprocessable):
    code, title = "invalid_subscription_keys", "The subscription keys are not valid"


class SubscriptionExpired(Unprocessable):
    code, title = "subscription_expired", "The subscription has already expired"


class PushPayloadTooLarge(PayloadTooLarge):
    code = "payload_too_large"


def subscriber_hash(kit: PrivacyKit, app_id: str, subscriber_id: str) -> str:
    return kit.keyed_hash(SUBSCRIBER_PURPOSE, app_id, subscriber_id)


def _field_error(loc: list[str], message: str, kind: str) -> dict[str, Any]:
    return {"errors": [{"loc": ["body", *loc], "msg": message, "type": kind}]}


async def check_endpoint(endpoint: str, allow_private: bool) -> str:
    """https only, no credentials, and every address the host resolves to must be public
    (unless WEBPUSH_ALLOW_PRIVATE_NETWORKS): the webhook guard, applied at subscribe time.
    Sending checks again, per connection, after its own resolution."""
    loc = ["subscription", "endpoint"]
    if not endpoint.isascii() or any(ch.isspace() or not ch.isprintable() for ch in endpoint):
        raise EndpointNotAllowed(
            "The endpoint must be a plain ASCII URL",
            extra=_field_error(loc, "must be a plain ASCII URL", "endpoint_not_allowed"),
        )
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname
        port = parts.port or 443
    except ValueError:
        raise EndpointNotAllowed(
            "The endpoint is not a valid URL", extra=_field_error(loc, "invalid URL", "url")
        ) from None
    if parts.scheme != "https" or not host:
        raise EndpointNotAllowed(
            "The endpoint must be an https URL",
            extra=_field_error(loc, "must be https", "endpoint_not_allowed"),
        )
    if parts.username or parts.password:
        raise EndpointNotAllowed(
            "The endpoint must not carry credentials",
            extra=_field_error(loc, "must not carry credentials", "endpoint_not_allowed"),
        )
    try:
        async with asyncio.timeout(DNS_TIMEOUT_SECONDS):
            await resolve_checked(host, port, allow_private)
    except TimeoutError:
        detail = "The endpoint's host name did not resolve in time"
        raise EndpointNotAllowed(
            detail, extra=_field_error(loc, detail, "endpoint_not_allowed")
        ) from None
    except TargetError as exc:
        detail = (
            "The endpoint resolves to a private, loopback, link-local or reserved address"
            if isinstance(exc, TargetNotAllowed)
            else "The endpoint's host name does not resolve"
        )
        raise EndpointNotAllowed(
            detail, extra=_field_error(loc, detail, "endpoint_not_allowed")
        ) from None
    return endpoint


class SubscriptionService:
    """Subscribe and unsubscribe: one statement each (plus the endpoint's DNS check)."""

    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        kit: PrivacyKit,
        policy: TtlPolicy,
        allow_private: bool,
    ) -> None:
        self.repo = WebPushSubscriptionRepository(session, tenant)
        self.tenant = tenant
        self.kit = kit
        self.policy = policy
        self.allow_private = allow_private

    async def subscribe(self, body: SubscribeIn) -> datetime:
        subscription = body.subscription
        try:
            load_user_agent_key(subscription.keys.p256dh)
        except InvalidSubscriptionKey as exc:
            raise InvalidKeys(
                str(exc), extra=_field_error(["subscription", "keys", "p256dh"], str(exc), "key")
            ) from None
        try:
            load_auth_secret(subscription.keys.auth)
        except InvalidSubscriptionKey as exc:
            raise InvalidKeys(
                str(exc), extra=_field_error(["subscription", "keys", "auth"], str(exc), "key")
            ) from None
        now = utcnow().replace(microsecond=0)  # whole seconds, as every timestamp we answer
        expires_at = self.policy.expires_at("webpush_subscriptions", body.ttl_seconds, now)
        if subscription.expirationTime is not None:
            # whole seconds, floored: never kept past the browser's own expiry
            ends = datetime.fromtimestamp(int(subscription.expirationTime // 1000), tz=UTC)
            if ends <= now:
                raise SubscriptionExpired(
                    "The subscription has already expired (expirationTime is in the past)",
                    extra=_field_error(
                        ["subscription", "expirationTime"], "in the past", "expired"
                    ),
                )
            expires_at = min(expires_at, ends)
        await check_endpoint(subscription.endpoint, self.allow_private)
        app_id = self.tenant.app_id
        sealed = self.kit.encrypt(
            SUBSCRIPTION_PURPOSE,
            app_id,
            orjson.dumps(
                {
                    "endpoint": subscription.endpoint,
                    "p256dh": subscription.keys.p256dh,
                    "auth": subscription.keys.auth,
                }
            ),
        )
        await self.repo.upsert(
            subscriber_hash(self.kit, app_id, body.subscriber_id), sealed, expires_at
        )
        return expires_at

    async def unsubscribe(self, subscriber_id: str) -> None:
        """Idempotent: an unknown or already removed subscriber is not an error."""
        await self.repo.delete_hashes(
            [subscriber_hash(self.kit, self.tenant.app_id, subscriber_id)]
        )


def vapid_of(kit: PrivacyKit, tenant: TenantContext) -> tuple[VapidKeys, str]:
    """The tenant's VAPID keys and contact, or 409 naming the CLI options to set."""
    config = tenant.config
    private_pem = open_secrets(kit, tenant.app_id, tenant.secrets_sealed).webpush_vapid_private_pem
    missing = [
        option
        for option, value in (
            ("--webpush-generate-keys", private_pem and config.webpush_public_key),
            ("--webpush-contact", config.webpush_contact),
        )
        if not value
    ]
    if missing or not private_pem or not config.webpush_public_key or not config.webpush_contact:
        raise WebPushNotConfigured(
            "Configure Web Push first: stateless tenants configure APP_ID " + " ".join(missing)
        )
    return VapidKeys(private_pem, config.webpush_public_key), config.webpush_contact


def public_key_of(tenant: TenantContext) -> str:
    key = tenant.config.webpush_public_key
    if not key:
        raise WebPushNotConfigured(
            "Configure Web Push first: stateless tenants configure APP_ID --webpush-generate-keys"
        )
    return key


def build_payload(request: WebPushIn) -> bytes:
    """The JSON the browser receives: for the service worker, or WebKit's declarative format."""
    notification = (
        request.notification.model_dump(exclude_none=True) if request.notification else None
    )
    if request.declarative:
        assert notification is not None
        declarative: dict[str, Any] = {"title": notification["title"]}
        declarative["navigate"] = notification["url"]
        for name in ("body", "icon", "tag"):
            if name in notification:
                declarative[name] = notification[name]
        if request.data is not None:
            declarative["data"] = request.data
        return orjson.dumps({"web_push": 8030, "notification": declarative})
    payload: dict[str, Any] = {}
    if notification is not None:
        payload["notification"] = notification
    if request.data is not None:
        payload["data"] = request.data
    return orjson.dumps(payload)


def _subscriber_hash(row: SubscriptionRow) -> str:
    return str(row.subscriber_hash)


class WebPushService(PushChannel[SubscriptionRow, PushOutcome, WebPushResult]):
    """Sends one notification to listed subscribers or to all live ones, streaming their rows
    through a fixed pool of senders (kit/push/pushing.py's PushChannel, as APNs does)."""

    logger = log
    log_event = "webpush_sent"

    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        kit: PrivacyKit,
        sender: WebPushSender,
        signer: VapidSigner,
        metrics: Metrics | None = None,
        batch_size: int = PUSH_BATCH_SIZE,
    ) -> None:
        self.repo = WebPushSubscriptionRepository(session, tenant)
        self.tenant = tenant
        self.app_id = tenant.app_id
        self.kit = kit
        self.sender = sender
        self.signer = signer
        self.metrics = metrics
        self.batch_size = batch_size

    def check(self, request: WebPushIn) -> SenderPool[SubscriptionRow, PushOutcome]:
        """What can fail before anything is sent (or queued): VAPID keys, the payload's size.
        Returns the pool of senders for this message."""
        keys, contact = vapid_of(self.kit, self.tenant)
        payload = build_payload(request)
        if len(payload) > MAX_PLAINTEXT_BYTES:
            raise PushPayloadTooLarge(
                f"The encrypted message would exceed 4096 bytes: keep the JSON payload at most "
                f"{MAX_PLAINTEXT_BYTES} bytes (it is {len(payload)}); nothing was sent"
            )
        headers = [
            ("content-encoding", "aes128gcm"),
            ("content-type", "application/octet-stream"),
            ("ttl", str(request.ttl if request.ttl is not None else DEFAULT_MESSAGE_TTL_SECONDS)),
        ]
        if request.urgency is not None:
            headers.append(("urgency", request.urgency))
        if request.topic is not None:
            headers.append(("topic", request.topic))
        return SenderPool(
            self._sender(payload, headers, keys, contact),
            self.sender.tenant_max_concurrency,
            on_error=lambda: PushOutcome(0, "InternalError"),
        )

    async def audience(self, request: WebPushIn) -> int:
        """How many subscribers a broadcast addresses: live ones (one COUNT) or distinct ids."""
        return await self.audience_of(request.subscriber_ids)

    async def broadcast(
        self,
        request: WebPushIn,
        *,
        start_after: str | None,
        counts: tuple[int, int, int],
        on_page: Callable[[str | None, PushTally[WebPushResult]], Awaitable[None]],
        page_timeout_seconds: float,
    ) -> PushTally[WebPushResult]:
        """A push as a resumable job (see PushService.broadcast): keyset pages from
        `start_after`, counts only, `on_page(cursor, tally)` after each settled page."""
        return await self.run_broadcast(
            self.check(request),
            request.subscriber_ids,
            start_after=start_after,
            counts=counts,
            on_page=on_page,
            page_timeout_seconds=page_timeout_seconds,
        )

    async def push(self, request: WebPushIn) -> WebPushOut:
        tally = await self.run_push(self.check(request), request.subscriber_ids)
        return WebPushOut(
            sent=tally.sent, failed=tally.failed, removed=tally.removed, results=tally.results
        )

    def _sender(
        self, payload: bytes, headers: list[tuple[str, str]], keys: VapidKeys, contact: str
    ) -> Callable[[SubscriptionRow], Awaitable[PushOutcome]]:
        app_id = self.tenant.app_id
        kit, signer = self.kit, self.signer

        async def send(row: SubscriptionRow) -> PushOutcome:
            try:
                opened = orjson.loads(
                    kit.decrypt(SUBSCRIPTION_PURPOSE, app_id, row.subscription_sealed)
                )
                endpoint = Endpoint.parse(str(opened["endpoint"]))
                # Parsed once per message; a retry sends the same body.
                ua_keys = UserAgentKeys.load(str(opened["p256dh"]), str(opened["auth"]))
                body = encrypt_payload(payload, ua_keys)
            except EngineError as exc:
                return PushOutcome(0, exc.reason)
            except (DecryptionError, InvalidSubscriptionKey, KeyError, orjson.JSONDecodeError):
                return PushOutcome(0, "SubscriptionUnreadable")
            origin = endpoint.origin

            def request_headers() -> list[tuple[str, str]]:
                # Per attempt: the cached VAPID token may have been renewed meanwhile.
                vapid = signer.authorization(app_id, keys, contact, origin)
                return [*headers, ("authorization", vapid)]

            return await self.sender.send(app_id, endpoint, body, request_headers)

        return send

    # -- what Web Push means, for the shared loop (PushChannel) --------------------------
    def hash_id(self, name: str) -> str:
        return subscriber_hash(self.kit, self.app_id, name)

    def key(self, row: SubscriptionRow) -> str:
        return _subscriber_hash(row)

    def classify(self, outcome: PushOutcome) -> tuple[Status, str | None]:
        if outcome.delivered:
            return "sent", None
        if outcome.gone:
            return "removed", f"HTTP{outcome.status}"
        return "failed", outcome.reason or f"HTTP{outcome.status}"

    def result(self, name: str, status: Status, reason: str | None) -> WebPushResult:
        return WebPushResult(subscriber_id=name, status=status, reason=reason)

    def missing(self, name: str) -> WebPushResult:
        return WebPushResult(subscriber_id=name, status="not_subscribed", reason="NotSubscribed")

    def name_of(self, result: WebPushResult) -> str:
        return result.subscriber_id

    def outcome_metric(self) -> MetricCounter | None:
        return None if self.metrics is None else self.metrics.web_pushes
