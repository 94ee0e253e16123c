"""Device tokens (register, unregister) and push: the rules between the API and APNs.

Device ids are only ever stored as keyed hashes and tokens only sealed, so pushing to `all`
cannot name devices: it reports counts. Tokens APNs calls dead are deleted as we go. A push
streams: pages of tokens feed a fixed pool of senders through a short queue, so memory and
in-flight work stay bounded whatever the audience, and the next page is read while the
previous one is on the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

import orjson
import structlog
from prometheus_client import Counter as MetricCounter
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.ios.apns import (
    ApnsClient,
    ApnsCredentials,
    ApnsCredentialsError,
    ApnsEnvironment,
    ApnsNotification,
    ApnsOutcome,
)
from stateless.ios.models import DeviceToken
from stateless.ios.repository import DeviceTokenRepository, PushRow
from stateless.ios.schemas import (
    Environment,
    PushIn,
    PushOut,
    PushResult,
    RegisterTokenIn,
)
from stateless.kit.crypto.sealing import DecryptionError, PrivacyKit
from stateless.kit.data.db import utcnow
from stateless.kit.observe.metrics import Metrics
from stateless.kit.push.pushing import (
    PushChannel,
    PushTally,
    SenderPool,
    Settled,
    Status,
)
from stateless.kit.web.errors import BadGateway, Conflict
from stateless.lifecycle.policy import TtlPolicy
from stateless.tenants.schemas import TenantContext
from stateless.tenants.service import open_secrets

DEVICE_ID_PURPOSE = "ios-device-id"
TOKEN_PURPOSE = "apns-token"  # noqa: S105 - a key-derivation label, not a secret
PUSH_BATCH_SIZE = 500

log = structlog.get_logger("stateless.ios")


class ApnsNotConfigured(Conflict):
    code, title = "apns_not_configured", "APNs is not configured for this app"


class ApnsUnreachable(BadGateway):
    code, title = "apns_unreachable", "APNs could not be reached"


def _unreached(outcome: ApnsOutcome) -> bool:
    """Nothing reached APNs, even after the retries (refused, reset, timed out)."""
    return outcome.status == 0 and (
        outcome.reason == "Timeout" or (outcome.reason or "").startswith("ConnectionError")
    )


def device_hash(kit: PrivacyKit, app_id: str, device_id: str) -> str:
    return kit.keyed_hash(DEVICE_ID_PURPOSE, app_id, device_id)


def _device_hash(row: PushRow) -> str:
    return str(row.device_hash)


class DeviceTokenService:
    """Register and unregister: one statement each, no reads (register is the hot path)."""

    def __init__(
        self, session: AsyncSession, tenant: TenantContext, kit: PrivacyKit, policy: TtlPolicy
    ) -> None:
        self.repo = DeviceTokenRepository(session, tenant)
        self.tenant = tenant
        self.kit = kit
        self.policy = policy

    async def live_counts_by_environment(self) -> dict[str, int]:
        """Live tokens per APNs environment, those with any (reports)."""
        counts = {}
        for environment in get_args(Environment):
            count = await self.repo.count(DeviceToken.environment == environment)
            if count:
                counts[environment] = count
        return counts

    async def register(self, body: RegisterTokenIn) -> datetime:
        expires_at = self.policy.expires_at("device_tokens", body.ttl_seconds, utcnow())
        app_id = self.tenant.app_id
        await self.repo.upsert(
            device_hash=device_hash(self.kit, app_id, body.device_id),
            token_sealed=self.kit.encrypt_text(TOKEN_PURPOSE, app_id, body.token),
            environment=body.environment,
            topic=body.topic or self.tenant.config.bundle_id,
            expires_at=expires_at,
        )
        return expires_at

    async def unregister(self, device_id: str) -> None:
        """Idempotent: an unknown or already removed device is not an error."""
        await self.repo.delete_hashes([device_hash(self.kit, self.tenant.app_id, device_id)])


def credentials_of(kit: PrivacyKit, tenant: TenantContext) -> ApnsCredentials:
    config = tenant.config
    key_pem = open_secrets(kit, tenant.app_id, tenant.secrets_sealed).apns_key_p8
    missing = [
        name
        for name, value in (
            ("--apns-team-id", config.apns_team_id),
            ("--apns-key-id", config.apns_key_id),
            ("--apns-key-file", key_pem),
        )
        if not value
    ]
    if missing or config.apns_team_id is None or config.apns_key_id is None or key_pem is None:
        raise ApnsNotConfigured(
            "Configure APNs first: stateless tenants configure APP_ID " + " ".join(missing)
        )
    return ApnsCredentials(config.apns_team_id, config.apns_key_id, key_pem)


def build_payload(request: PushIn) -> bytes:
    """`aps` from the request fields; custom `data` keys sit beside it, as Apple expects."""
    aps: dict[str, Any] = {}
    if request.alert is not None:
        aps["alert"] = request.alert.model_dump(exclude_none=True)
    if request.badge is not None:
        aps["badge"] = request.badge
    if request.sound is not None:
        aps["sound"] = request.sound
    if request.push_type == "background":
        aps["content-available"] = 1
    return orjson.dumps({**(request.data or {}), "aps": aps})


@dataclass
class _ApnsTally(PushTally[PushResult]):
    reached: bool = False  # some notification got an answer from APNs
    unreached_streak: int = 0  # outcomes in a row that never reached APNs


class PushService(PushChannel[PushRow, ApnsOutcome, PushResult]):
    """Sends one notification to listed devices or to all live ones, streaming their tokens
    (the loop is kit/push/pushing.py's PushChannel; APNs' part is here)."""

    logger = log
    log_event = "push_sent"

    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        kit: PrivacyKit,
        apns: ApnsClient,
        metrics: Metrics | None = None,
        batch_size: int = PUSH_BATCH_SIZE,
    ) -> None:
        self.repo = DeviceTokenRepository(session, tenant)
        self.tenant = tenant
        self.app_id = tenant.app_id
        self.kit = kit
        self.apns = apns
        self.metrics = metrics
        self.batch_size = batch_size

    def check(self, request: PushIn) -> tuple[ApnsCredentials, bytes]:
        """What can fail before anything is sent (or queued): the APNs key must sign."""
        credentials = credentials_of(self.kit, self.tenant)
        try:
            # Sign (or reuse) the provider token first: a key that cannot sign fails the push
            # before any token is read.
            self.apns.tokens.bearer(self.tenant.app_id, credentials)
        except ApnsCredentialsError as exc:
            raise ApnsNotConfigured(
                "The stored APNs key cannot sign; configure --apns-key-file again"
            ) from exc
        return credentials, build_payload(request)

    def _pool(
        self, request: PushIn, credentials: ApnsCredentials, payload: bytes
    ) -> SenderPool[PushRow, ApnsOutcome]:
        return SenderPool(
            self._sender(request, credentials, payload),
            self.apns.tenant_max_concurrency,
            on_error=lambda: ApnsOutcome(0, "InternalError"),
        )

    async def audience(self, request: PushIn) -> int:
        """How many devices a broadcast addresses: live devices (one COUNT) or distinct ids."""
        return await self.audience_of(request.device_ids)

    async def broadcast(
        self,
        request: PushIn,
        *,
        start_after: str | None,
        counts: tuple[int, int, int],
        on_page: Callable[[str | None, PushTally[PushResult]], Awaitable[None]],
        page_timeout_seconds: float,
    ) -> PushTally[PushResult]:
        """A push as a resumable job: keyset pages from `start_after`, counts only (`counts`:
        sent, failed, removed so far), `on_page(cursor, tally)` after each settled page."""
        credentials, payload = self.check(request)
        return await self.run_broadcast(
            self._pool(request, credentials, payload),
            request.device_ids,
            start_after=start_after,
            counts=counts,
            on_page=on_page,
            page_timeout_seconds=page_timeout_seconds,
        )

    async def push(self, request: PushIn) -> PushOut:
        credentials, payload = self.check(request)
        pool = self._pool(request, credentials, payload)
        tally = await self.run_push(pool, request.device_ids)
        return PushOut(
            sent=tally.sent, failed=tally.failed, removed=tally.removed, results=tally.results
        )

    def _sender(
        self, request: PushIn, credentials: ApnsCredentials, payload: bytes
    ) -> Callable[[PushRow], Awaitable[ApnsOutcome]]:
        priority = request.priority or (5 if request.push_type == "background" else 10)
        app_id = self.tenant.app_id
        fallback_topic = self.tenant.config.bundle_id

        async def send(row: PushRow) -> ApnsOutcome:
            topic = row.topic or fallback_topic
            if topic is None:
                return ApnsOutcome(0, "MissingTopic")
            environment: ApnsEnvironment = (
                "sandbox" if row.environment == "sandbox" else "production"
            )
            try:
                token = self.kit.decrypt_text(TOKEN_PURPOSE, app_id, row.token_sealed)
            except DecryptionError:  # sealed under a SECRET_KEY no longer configured
                return ApnsOutcome(0, "TokenUnreadable")
            notification = ApnsNotification(
                token=token,
                environment=environment,
                topic=topic,
                push_type=request.push_type,
                priority=priority,
                payload=payload,
                expiration=request.expiration,
                collapse_id=request.collapse_id,
            )
            return await self.apns.send(app_id, credentials, notification)

        return send

    # -- what APNs means, for the shared loop (PushChannel) ------------------------------
    def hash_id(self, name: str) -> str:
        return device_hash(self.kit, self.app_id, name)

    def key(self, row: PushRow) -> str:
        return _device_hash(row)

    def classify(self, outcome: ApnsOutcome) -> tuple[Status, str | None]:
        if outcome.delivered:
            return "sent", None
        if outcome.token_is_dead:
            return "removed", outcome.reason
        return "failed", outcome.reason or f"HTTP{outcome.status}"

    def result(self, name: str, status: Status, reason: str | None) -> PushResult:
        return PushResult(device_id=name, status=status, reason=reason)

    def missing(self, name: str) -> PushResult:
        return PushResult(device_id=name, status="not_registered", reason="NotRegistered")

    def name_of(self, result: PushResult) -> str:
        return result.device_id

    def outcome_metric(self) -> MetricCounter | None:
        return None if self.metrics is None else self.metrics.pushes

    def new_tally(self, sent: int = 0, failed: int = 0, removed: int = 0) -> _ApnsTally:
        return _ApnsTally(sent=sent, failed=failed, removed=removed)

    def after_settle(
        self,
        tally: PushTally[PushResult],
        settled: Settled[PushRow, ApnsOutcome],
        last: bool,
    ) -> None:
        """If `batch_size` outcomes in a row (or every one of a smaller push) never reached
        APNs, the push stops with 502 instead of trying every remaining token."""
        assert isinstance(tally, _ApnsTally)
        for _, outcome in settled:
            if _unreached(outcome):
                tally.unreached_streak += 1
            else:
                tally.unreached_streak = 0
                tally.reached = True
        streak = tally.unreached_streak
        if streak >= self.batch_size or (last and streak and not tally.reached):
            log.warning("apns_unreachable", tenant=self.app_id, count=streak)
            tally.failed -= streak  # the counts are those of the notifications that got answers
            raise ApnsUnreachable(
                "No notification of a batch reached APNs, even after retries; nothing more was "
                "sent. Try again later.",
                extra={"sent": tally.sent, "failed": tally.failed, "removed": tally.removed},
            )
