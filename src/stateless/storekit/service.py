"""Purchase validation and notification handling.

One rule set answers for both proofs (StoreKit 2 JWS, legacy receipt): revoked beats everything,
purchases without an expiry are valid, subscriptions are valid until their expiry (or the end of
a billing grace period), and what App Store notifications told us about the same original
transaction (refund, renewal, expiry, grace period) overrides the proof the app sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

import structlog
from appstoreserverlibrary.models.JWSRenewalInfoDecodedPayload import (
    JWSRenewalInfoDecodedPayload,
)
from appstoreserverlibrary.models.JWSTransactionDecodedPayload import (
    JWSTransactionDecodedPayload,
)
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.affiliate.currencies import minor_units
from stateless.affiliate.service import AffiliateService, InvalidCode
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import utcnow
from stateless.kit.observe.metrics import Metrics
from stateless.kit.web.errors import BadRequest, ProblemError
from stateless.kit.wire.bounds import datetime_from_epoch_ms
from stateless.lifecycle.policy import DAY, TtlPolicy
from stateless.storekit.models import Entitlement, NotificationReceipt
from stateless.storekit.receipts import VerifyReceiptClient, reason_for_status
from stateless.storekit.repository import EntitlementRepository, NotificationReceiptRepository
from stateless.storekit.schemas import (
    NotificationOut,
    ValidateReceiptIn,
    ValidateReceiptOut,
    ValidationStatus,
)
from stateless.storekit.verifier import SignedDataInvalid, StoreKitVerifier, VerifiedNotification
from stateless.tenants.schemas import TenantContext
from stateless.tenants.service import open_secrets

log = structlog.get_logger("stateless.storekit")

TRANSACTION_PURPOSE = "storekit-original-transaction"
NOTIFICATION_PURPOSE = "storekit-notification"
# StoreKit 2 prices are milli-units; anything above a trillion units is not a real price.
MAX_PRICE_MILLIS = 10**15
_MAX_UPSTREAM_TEXT = 256
_NO_BUNDLE_ID = "invalid.stateless.no-such-app"
_NO_APP_APPLE_ID = 0

# Notification types that change what validate-receipt answers, and the state they set.
STATE_BY_NOTIFICATION: dict[str, str] = {
    "REFUND": "revoked",
    "REVOKE": "revoked",
    "EXPIRED": "expired",
    "GRACE_PERIOD_EXPIRED": "expired",
    "DID_FAIL_TO_RENEW": "grace",  # "expired" when the renewal info carries no grace period
    "DID_RENEW": "active",
    "REFUND_REVERSED": "active",
}

Environment = Literal["production", "sandbox"]
AffiliateOutcome = Literal["recorded", "duplicate", "invalid_code", "rejected"]
# Left out of the validation answer when unset; the documented core fields are always present.
_OPTIONAL_FIELDS = ("reason", "grace_period_expires_at", "affiliate")


# Another domain's reaction to a verified, first-seen notification (entitlement sources),
# called in the same transaction; wired in domains.py so storekit imports none of them.
NotificationFollower = Callable[[VerifiedNotification], Awaitable[None]]


class InvalidSignedPayload(BadRequest):
    code, title = "invalid_signed_payload", "Invalid signed payload"


@dataclass(frozen=True, slots=True)
class StoreKitProviders:
    """Built once per app (storekit/wiring.py): the JWS verifier and the verifyReceipt client."""

    verifier: StoreKitVerifier
    receipts: VerifyReceiptClient


@dataclass(slots=True)
class Verdict:
    status: ValidationStatus
    is_active: bool
    product_id: str | None = None
    expires_at: datetime | None = None
    environment: Environment | None = None
    reason: str | None = None
    grace_period_expires_at: datetime | None = None
    # for the affiliate conversion; never returned or stored in plaintext
    transaction_id: str | None = None
    price: Decimal | None = None
    currency: str | None = None

    def out(self, tenant: str) -> ValidateReceiptOut:
        return ValidateReceiptOut(
            status=self.status,
            is_active=self.is_active,
            product_id=self.product_id,
            expires_at=self.expires_at,
            environment=self.environment,
            tenant=tenant,
            reason=self.reason,
            grace_period_expires_at=self.grace_period_expires_at,
        )


def invalid(reason: str) -> Verdict:
    return Verdict(status="invalid", is_active=False, reason=reason)


def from_ms(value: object) -> datetime | None:
    """Apple's millisecond timestamps (int, or digit strings in legacy receipts); ValueError
    for anything outside years 1970-9999, so an odd upstream answer reads as `invalid`."""
    return datetime_from_epoch_ms(value)


def _upstream_text(value: object) -> str | None:
    """A short identifier from Apple's JSON (digits may come as numbers); None for anything
    else, so an odd answer cannot break the response or the hashing of ids."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if 0 < len(text) <= _MAX_UPSTREAM_TEXT and text.isprintable() else None


def _ms_key(value: object) -> int:
    """Sort key of an upstream millisecond timestamp, bounded before int() sees it."""
    stamp = from_ms(value)
    return int(stamp.timestamp() * 1000) if stamp is not None else 0


def _environment(raw: object) -> Environment:
    return "sandbox" if raw == "Sandbox" else "production"


def evaluate(
    now: datetime,
    *,
    product_id: str | None,
    subscription_expires_at: datetime | None,
    revoked_at: datetime | None,
    environment: Environment,
    entitlement: Entitlement | None,
    grace_until: datetime | None = None,
) -> Verdict:
    """The one decision table (see docs/storekit.md)."""
    verdict = Verdict(
        status="valid",
        is_active=True,
        product_id=product_id,
        expires_at=subscription_expires_at,
        environment=environment,
    )
    if revoked_at is not None or (entitlement is not None and entitlement.state == "revoked"):
        verdict.status, verdict.is_active, verdict.reason = "revoked", False, "revoked"
        if entitlement is not None and entitlement.state == "revoked":
            verdict.reason = entitlement.last_event.lower()
        return verdict
    if subscription_expires_at is None:
        return verdict  # consumables, non-consumables: valid unless revoked
    effective = subscription_expires_at
    grace = grace_until
    if entitlement is not None:
        known = entitlement.subscription_expires_at
        if entitlement.state in ("active", "grace") and known is not None and known > effective:
            effective = known  # renewed since the app's proof was signed
        if entitlement.state == "grace" and entitlement.grace_expires_at is not None:
            grace = max(grace or entitlement.grace_expires_at, entitlement.grace_expires_at)
        if entitlement.state == "expired" and (known is None or known >= subscription_expires_at):
            verdict.status, verdict.is_active = "expired", False
            verdict.reason = entitlement.last_event.lower()
            return verdict
    verdict.expires_at = effective
    if effective > now:
        return verdict
    if grace is not None and grace > now:
        verdict.grace_period_expires_at = grace
        return verdict
    verdict.status, verdict.is_active, verdict.reason = "expired", False, "subscription_expired"
    return verdict


def _entitlement_ttl(policy: TtlPolicy, state: str, until: datetime | None, now: datetime) -> int:
    """Rows live as long as the entitlement they describe (plus a day), within the policy cap;
    revocations are kept for the maximum so a refunded purchase keeps answering `revoked`."""
    maximum = policy.rule("entitlements").max_seconds
    if state == "revoked" or until is None:
        return maximum
    seconds = int((until - now).total_seconds()) + DAY
    return min(maximum, max(DAY, seconds))


class StoreKitService:
    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        *,
        kit: PrivacyKit,
        providers: StoreKitProviders,
        metrics: Metrics,
        affiliate: AffiliateService,
    ) -> None:
        self.session = session
        self.tenant = tenant
        self.kit = kit
        self.providers = providers
        self.metrics = metrics
        self.affiliate = affiliate
        self.entitlements = EntitlementRepository(session, tenant)

    async def validate(self, body: ValidateReceiptIn) -> dict[str, Any]:
        """Judge the proof (JWS or legacy receipt), count it, record the affiliate purchase;
        the answer's optional fields are left out when unset."""
        if body.signed_transaction is not None:
            verdict = await self.from_signed_transaction(body.signed_transaction)
        else:
            verdict = await self.from_receipt(body.receipt_data or "")
        proof = "signed_transaction" if body.signed_transaction is not None else "receipt"
        self.metrics.storekit_validations.labels(proof=proof, status=verdict.status).inc()
        out = verdict.out(self.tenant.app_id)
        if body.affiliate_code is not None and verdict.status == "valid":
            out.affiliate = await self.record_purchase(body.affiliate_code, verdict)
        data = out.model_dump(mode="json")
        for name in _OPTIONAL_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data

    async def _entitlement(self, original_transaction_id: str | None) -> Entitlement | None:
        if not original_transaction_id:
            return None
        key = self.kit.keyed_hash(TRANSACTION_PURPOSE, self.tenant.app_id, original_transaction_id)
        return await self.entitlements.by_hash(key)

    async def from_signed_transaction(self, token: str) -> Verdict:
        config = self.tenant.config
        try:
            tx = await self.providers.verifier.verify_transaction(
                token, config.bundle_id, config.app_apple_id
            )
        except SignedDataInvalid as exc:
            return invalid(exc.reason)
        return await self._judge_transaction(tx)

    async def _judge_transaction(self, tx: JWSTransactionDecodedPayload) -> Verdict:
        try:
            expires = from_ms(tx.expiresDate)
            revoked = from_ms(tx.revocationDate)
        except ValueError:
            return invalid("malformed_payload")
        verdict = evaluate(
            utcnow(),
            product_id=tx.productId,
            subscription_expires_at=expires,
            revoked_at=revoked,
            environment=_environment(tx.rawEnvironment),
            entitlement=await self._entitlement(tx.originalTransactionId),
        )
        verdict.transaction_id = tx.transactionId
        if isinstance(tx.price, int) and 0 <= tx.price <= MAX_PRICE_MILLIS and tx.currency:
            verdict.price = Decimal(tx.price) / 1000  # StoreKit 2 prices are milli-units
            verdict.currency = tx.currency
        return verdict

    async def record_purchase(self, code: str, verdict: Verdict) -> AffiliateOutcome:
        """One `purchase` conversion per transaction (event id = transaction id, hashed by the
        affiliate service). A bad code never changes the validation answer."""
        amount = conversion_amount(verdict.price, verdict.currency)
        service = self.affiliate
        try:
            return await service.record_conversion(
                code,
                event="purchase",
                value=amount[0] if amount else None,
                currency=amount[1] if amount else None,
                event_id=verdict.transaction_id,
            )
        except InvalidCode:
            return "invalid_code"
        except ProblemError as exc:
            log.warning("storekit_conversion_rejected", code=exc.code)
            return "rejected"

    async def from_receipt(self, receipt_data: str) -> Verdict:
        bundle_id = self.tenant.config.bundle_id
        if not bundle_id:
            return invalid("bundle_id_not_configured")
        secrets = open_secrets(self.kit, self.tenant.app_id, self.tenant.secrets_sealed)
        data = await self.providers.receipts.verify(receipt_data, secrets.appstore_shared_secret)
        status = data["status"]
        if status not in (0, 21006):
            return invalid(reason_for_status(status))
        try:
            return await self._judge_receipt(data, bundle_id)
        except (ValueError, TypeError, AttributeError):
            return invalid("unreadable_receipt")

    async def _judge_receipt(self, data: dict[str, Any], bundle_id: str) -> Verdict:
        receipt = data.get("receipt") or {}
        if receipt.get("bundle_id") != bundle_id:
            return invalid("wrong_bundle_id")
        entries: list[dict[str, Any]] = list(
            data.get("latest_receipt_info") or receipt.get("in_app") or []
        )
        if not entries:
            return invalid("no_purchases")
        subscriptions = [e for e in entries if e.get("expires_date_ms")]
        if subscriptions:
            latest = max(subscriptions, key=lambda e: _ms_key(e["expires_date_ms"]))
        else:
            latest = max(entries, key=lambda e: _ms_key(e.get("purchase_date_ms") or None))
        original = latest.get("original_transaction_id")
        grace = None
        for renewal in data.get("pending_renewal_info") or []:
            if renewal.get("original_transaction_id") == original:
                grace = from_ms(renewal.get("grace_period_expires_date_ms"))
        verdict = evaluate(
            utcnow(),
            product_id=_upstream_text(latest.get("product_id")),
            subscription_expires_at=from_ms(latest.get("expires_date_ms")),
            revoked_at=from_ms(latest.get("cancellation_date_ms")),
            environment=_environment(data.get("environment")),
            entitlement=await self._entitlement(str(original) if original else None),
            grace_until=grace,
        )
        if data["status"] == 21006 and verdict.status == "valid":
            verdict.status, verdict.is_active, verdict.reason = (
                "expired",
                False,
                "subscription_expired",
            )
        verdict.transaction_id = _upstream_text(latest.get("transaction_id"))
        return verdict


def conversion_amount(price: Decimal | None, currency: str | None) -> tuple[Decimal, str] | None:
    """The purchase price in the currency's minor units (Apple's milli-units can be finer)."""
    if price is None or not currency:
        return None
    places = minor_units(currency.strip().upper())
    if places is None:
        return None
    return price.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN), currency


class NotificationService:
    """Apply one verified App Store Server Notification V2 to the tenant's entitlements."""

    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        *,
        kit: PrivacyKit,
        providers: StoreKitProviders,
        policy: TtlPolicy,
        metrics: Metrics,
        followers: tuple[NotificationFollower, ...] = (),
    ) -> None:
        self.followers = followers
        self.app_id = tenant.app_id
        self.config = tenant.config
        self.kit = kit
        self.providers = providers
        self.metrics = metrics
        self.session = session
        self.policy = policy
        self.receipts = NotificationReceiptRepository(session, tenant)
        self.entitlements = EntitlementRepository(session, tenant)

    async def receive(self, signed_payload: str) -> NotificationOut:
        """Verify the notification's JWS (unverifiable: 400, nothing recorded), then apply it."""
        # An unknown or unconfigured app is verified against ids no genuine payload names: the
        # chain is checked all the same and the answer is a known app's for a foreign payload.
        bundle_id = self.config.bundle_id or _NO_BUNDLE_ID
        app_apple_id = self.config.app_apple_id or _NO_APP_APPLE_ID
        try:
            verified = await self.providers.verifier.verify_notification(
                signed_payload, bundle_id, app_apple_id
            )
        except SignedDataInvalid as exc:
            self.metrics.storekit_notifications.labels(outcome="rejected").inc()
            raise InvalidSignedPayload(
                f"The notification could not be verified: {exc.reason}",
                extra={"reason": exc.reason},
            ) from None
        out = await self.handle(verified)
        self.metrics.storekit_notifications.labels(outcome=out.status).inc()
        return out

    async def handle(self, verified: VerifiedNotification) -> NotificationOut:
        payload = verified.payload
        kind = str(payload.rawNotificationType)
        now = utcnow()
        notification_hash = self.kit.keyed_hash(
            NOTIFICATION_PURPOSE, self.app_id, str(payload.notificationUUID)
        )
        if await self.receipts.seen(notification_hash):
            return NotificationOut(status="duplicate", notification_type=kind)
        await self.receipts.drop_expired(notification_hash)
        self.receipts.add(
            NotificationReceipt(notification_hash=notification_hash, notification_type=kind),
            self.policy.expires_at("notification_receipts", None, now),
        )
        for follower in self.followers:
            await follower(verified)
        state = STATE_BY_NOTIFICATION.get(kind)
        tx = verified.transaction
        if state is None or tx is None or not tx.originalTransactionId:
            await self.session.flush()
            return NotificationOut(status="ignored", notification_type=kind)
        try:
            await self._apply(kind, state, tx, verified.renewal, payload.signedDate, now)
        except ValueError:  # signed by Apple, yet a date outside 1970-9999: nothing to apply
            log.warning("storekit_notification_unreadable_dates", notification_type=kind)
            await self.session.flush()
            return NotificationOut(status="ignored", notification_type=kind)
        await self.session.flush()
        return NotificationOut(status="processed", notification_type=kind)

    async def _apply(
        self,
        kind: str,
        state: str,
        tx: JWSTransactionDecodedPayload,
        renewal: JWSRenewalInfoDecodedPayload | None,
        signed_date: int | None,
        now: datetime,
    ) -> None:
        signed_at = from_ms(signed_date) or now
        expires = from_ms(tx.expiresDate)
        grace = from_ms(renewal.gracePeriodExpiresDate) if renewal is not None else None
        revoked = None
        if state == "grace" and (grace is None or grace <= now):
            state = "expired"  # billing retry without a grace period: access ends at expiry
        if state == "revoked":
            revoked = from_ms(tx.revocationDate) or now
        until = {"active": expires, "grace": grace, "expired": expires}.get(state)
        ttl = _entitlement_ttl(self.policy, state, until, now)
        values: dict[str, Any] = {
            "state": state,
            "last_event": kind,
            "event_signed_at": signed_at,
            "subscription_expires_at": expires,
            "grace_expires_at": grace if state == "grace" else None,
            "revoked_at": revoked,
            "expires_at": self.policy.expires_at("entitlements", ttl, now),
        }
        key = self.kit.keyed_hash(TRANSACTION_PURPOSE, self.app_id, tx.originalTransactionId or "")
        current = await self.entitlements.by_hash(key)
        if current is None:
            await self.entitlements.drop_expired(key)
            expires_at = values.pop("expires_at")
            self.entitlements.add(Entitlement(original_transaction_hash=key, **values), expires_at)
            return
        final = current.state == "revoked" and kind != "REFUND_REVERSED"
        if current.event_signed_at > signed_at or final:
            # Apple may deliver out of order; a refund stands until Apple reverses it
            log.info("storekit_notification_superseded", notification_type=kind)
            return
        # the row is rewritten: its lifetime (and the database's TTL guard) restarts from now
        values["created_at"] = now
        await self.entitlements.update_where(values, Entitlement.original_transaction_hash == key)
