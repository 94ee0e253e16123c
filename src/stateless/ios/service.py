"""Device tokens (register, unregister) and push: the rules between the API and APNs.

Device ids are only ever stored as keyed hashes and tokens only sealed, so pushing to `all`
cannot name devices: it reports counts. Tokens APNs calls dead are deleted as we go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.ios.apns import (
    ApnsClient,
    ApnsCredentials,
    ApnsCredentialsError,
    ApnsEnvironment,
    ApnsNotification,
    ApnsOutcome,
)
from stateless.ios.repository import DeviceTokenRepository, PushRow
from stateless.ios.schemas import PushIn, PushOut, PushResult, RegisterTokenIn, ResultStatus
from stateless.kit.crypto import DecryptionError, PrivacyKit
from stateless.kit.db import utcnow
from stateless.kit.errors import BadGateway, Conflict
from stateless.kit.metrics import Metrics
from stateless.lifecycle.policy import TtlPolicy
from stateless.tenants.schemas import TenantContext
from stateless.tenants.service import open_secrets

DEVICE_ID_PURPOSE = "ios-device-id"
TOKEN_PURPOSE = "apns-token"  # noqa: S105 - a key-derivation label, not a secret
PUSH_BATCH_SIZE = 500

log = structlog.get_logger("stateless.ios")


class ApnsNotConfigured(Conflict):
    code = "apns_not_configured"


class ApnsUnreachable(BadGateway):
    code = "apns_unreachable"


def _unreachable(outcomes: Sequence[ApnsOutcome]) -> bool:
    """A whole batch that never reached APNs: stop instead of retrying every remaining token."""
    return bool(outcomes) and all(
        o.status == 0 and (o.reason or "").startswith("ConnectionError") for o in outcomes
    )


def device_hash(kit: PrivacyKit, app_id: str, device_id: str) -> str:
    return kit.keyed_hash(DEVICE_ID_PURPOSE, app_id, device_id)


class DeviceTokenService:
    """Register and unregister: one statement each, no reads (register is the hot path)."""

    def __init__(
        self, session: AsyncSession, tenant: TenantContext, kit: PrivacyKit, policy: TtlPolicy
    ) -> None:
        self.repo = DeviceTokenRepository(session, tenant)
        self.tenant = tenant
        self.kit = kit
        self.policy = policy

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
class PushTally:
    sent: int = 0
    failed: int = 0
    removed: int = 0
    results: list[PushResult] = field(default_factory=list)

    def out(self) -> PushOut:
        return PushOut(
            sent=self.sent, failed=self.failed, removed=self.removed, results=self.results
        )


class PushService:
    """Sends one notification to listed devices or to all live ones, batch by batch."""

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
        self.kit = kit
        self.apns = apns
        self.metrics = metrics
        self.batch_size = batch_size

    async def push(self, request: PushIn) -> PushOut:
        credentials = credentials_of(self.kit, self.tenant)
        payload = build_payload(request)
        tally = PushTally()
        try:
            if request.device_ids is not None:
                await self._push_listed(request, credentials, payload, tally)
            else:
                await self._push_all(request, credentials, payload, tally)
        except ApnsCredentialsError as exc:
            raise ApnsNotConfigured(
                "The stored APNs key cannot sign; configure --apns-key-file again"
            ) from exc
        log.info(
            "push_sent",
            tenant=self.tenant.app_id,
            sent=tally.sent,
            failed=tally.failed,
            removed=tally.removed,
        )
        return tally.out()

    async def _push_all(
        self, request: PushIn, credentials: ApnsCredentials, payload: bytes, tally: PushTally
    ) -> None:
        after: str | None = None
        while True:
            rows = await self.repo.page_after(after, self.batch_size)
            if not rows:
                return
            after = rows[-1].device_hash
            outcomes = await self._send_rows(rows, request, credentials, payload)
            self._check_reachable(outcomes, tally)
            await self._settle(rows, outcomes, tally, names=None)
            if len(rows) < self.batch_size:
                return

    async def _push_listed(
        self, request: PushIn, credentials: ApnsCredentials, payload: bytes, tally: PushTally
    ) -> None:
        assert request.device_ids is not None
        app_id = self.tenant.app_id
        names: dict[str, str] = {}
        for device_id in request.device_ids:  # duplicates are pushed once, reported once
            names.setdefault(device_hash(self.kit, app_id, device_id), device_id)
        found: set[str] = set()
        hashes = list(names)
        for start in range(0, len(hashes), self.batch_size):
            rows = await self.repo.by_hashes(hashes[start : start + self.batch_size])
            found.update(row.device_hash for row in rows)
            outcomes = await self._send_rows(rows, request, credentials, payload)
            self._check_reachable(outcomes, tally)
            await self._settle(rows, outcomes, tally, names=names)
        for hashed, device_id in names.items():
            if hashed not in found:
                tally.failed += 1
                tally.results.append(
                    PushResult(device_id=device_id, status="not_registered", reason="NotRegistered")
                )
        order = {device_id: i for i, device_id in enumerate(names.values())}
        tally.results.sort(key=lambda r: order[r.device_id])

    def _check_reachable(self, outcomes: Sequence[ApnsOutcome], tally: PushTally) -> None:
        if _unreachable(outcomes):
            log.warning("apns_unreachable", tenant=self.tenant.app_id, count=len(outcomes))
            raise ApnsUnreachable(
                "No notification of a batch reached APNs, even after retries; nothing more was "
                "sent. Try again later.",
                extra={"sent": tally.sent, "failed": tally.failed, "removed": tally.removed},
            )

    async def _send_rows(
        self,
        rows: Sequence[PushRow],
        request: PushIn,
        credentials: ApnsCredentials,
        payload: bytes,
    ) -> list[ApnsOutcome]:
        priority = request.priority or (5 if request.push_type == "background" else 10)
        app_id = self.tenant.app_id
        fallback_topic = self.tenant.config.bundle_id

        async def one(row: PushRow) -> ApnsOutcome:
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

        return list(await asyncio.gather(*(one(row) for row in rows)))

    async def _settle(
        self,
        rows: Sequence[PushRow],
        outcomes: Sequence[ApnsOutcome],
        tally: PushTally,
        names: dict[str, str] | None,
    ) -> None:
        """Count outcomes, delete the tokens APNs called dead, name devices the caller listed."""
        dead: list[str] = []
        status: ResultStatus
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome.delivered:
                tally.sent += 1
                status, reason = "sent", None
            elif outcome.token_is_dead:
                tally.removed += 1
                dead.append(row.device_hash)
                status, reason = "removed", outcome.reason
            else:
                tally.failed += 1
                status, reason = "failed", outcome.reason or f"HTTP{outcome.status}"
            if self.metrics is not None:
                self.metrics.pushes.labels(outcome=status).inc()
            if names is not None:
                tally.results.append(
                    PushResult(device_id=names[row.device_hash], status=status, reason=reason)
                )
        await self.repo.delete_hashes(dead)
