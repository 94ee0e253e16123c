"""What the entitlement routes and jobs do, on top of `EntitlementService`: the device's
transactions, Stripe Checkout and webhooks, App Store notifications and reconciliation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog

from stateless.entitlements.appstore import (
    STATUS_STATE,
    AppStoreApi,
    AppStoreCredentials,
    StoreApiUnavailable,
    notification_facts,
    recompute,
    transaction_facts,
)
from stateless.entitlements.catalog import canonical_token, is_mapped, token_or_none
from stateless.entitlements.service import EntitlementService
from stateless.entitlements.stripe_billing import (
    HANDLED_EVENTS,
    SUBSCRIPTION_EVENTS,
    CheckoutCreated,
    StripeGateway,
    StripeUnavailable,
    invoice_payment,
    invoice_revenue,
    invoice_subscription,
    payment_facts,
    subscription_facts,
    verify_signature,
)
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.context import TenantContext
from stateless.kit.web.errors import BadGateway, BadRequest, Conflict, ProblemError, Unprocessable
from stateless.kit.wire.bounds import datetime_from_epoch_ms
from stateless.storekit.service import InvalidSignedPayload
from stateless.storekit.verifier import SignedDataInvalid, StoreKitVerifier, VerifiedNotification
from stateless.tenants.service import open_secrets

log = structlog.get_logger("stateless.entitlements")

# Stripe webhook bodies are a few kB; anything this large is not an event.
MAX_EVENT_BYTES = 512 * 1024
# Notification history asked for on the first reconciliation (Apple keeps 180 days).
FIRST_HISTORY_WINDOW = timedelta(days=7)
HISTORY_OVERLAP = timedelta(minutes=10)
MAX_HISTORY_WINDOW = timedelta(days=179)
RECONCILE_BATCH = 200
# Placeholder secret for apps without one: the signature check runs (and fails) all the same.
_NO_SECRET = "whsec_unconfigured_app_placeholder"  # noqa: S105 - never matches a real signature


class SubjectMismatch(Conflict):
    code, title = "subject_mismatch", "Subject mismatch"


class SubjectMissing(Unprocessable):
    code, title = "app_account_token_required", "App account token required"


class StripeNotConfigured(Conflict):
    code, title = "stripe_not_configured", "Stripe not configured"


class PriceNotMapped(Unprocessable):
    code, title = "price_not_mapped", "Price not in the entitlement map"


class ReturnUrlNotAllowed(Unprocessable):
    code, title = "return_url_not_allowed", "Return URL not allowed"


class InvalidStripeWebhook(BadRequest):
    code, title = "invalid_webhook_signature", "Invalid webhook signature"


class StoreUnavailable(BadGateway):
    code, title = "store_unavailable", "Store API unavailable"


@dataclass(frozen=True, slots=True)
class EntitlementProviders:
    """Built once per app (entitlements/wiring.py)."""

    verifier: StoreKitVerifier
    appstore: AppStoreApi
    stripe: StripeGateway


@dataclass(slots=True)
class ReconcileReport:
    status: str = "completed"
    checked: int = 0
    updated: int = 0
    recovered: int = 0
    detail: str | None = None


def _on_origins(url: str, origins: list[str]) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or "@" in parts.netloc:
        return False
    return f"{parts.scheme}://{parts.netloc.lower()}" in origins


class PurchaseFlows:
    def __init__(
        self,
        service: EntitlementService,
        tenant: TenantContext,
        *,
        kit: PrivacyKit,
        providers: EntitlementProviders,
    ) -> None:
        self.service = service
        self.tenant = tenant
        self.kit = kit
        self.providers = providers

    def _secrets(self) -> Any:
        return open_secrets(self.kit, self.tenant.app_id, self.tenant.secrets_sealed)

    # -- the device ---------------------------------------------------------------------------

    async def record_transaction(self, signed: str, body_token: str | None) -> dict[str, Any]:
        """Verify a StoreKit 2 transaction like validate-receipt does, fold it in, answer."""
        config = self.tenant.config
        try:
            tx = await self.providers.verifier.verify_transaction(
                signed, config.bundle_id, config.app_apple_id
            )
        except SignedDataInvalid as exc:
            raise InvalidSignedPayload(
                f"The transaction could not be verified: {exc.reason}",
                extra={"reason": exc.reason},
            ) from None
        signed_token = token_or_none(tx.appAccountToken)
        given = canonical_token(body_token) if body_token is not None else None
        if signed_token is not None and given is not None and signed_token != given:
            raise SubjectMismatch("The transaction's appAccountToken and app_account_token differ")
        token = signed_token or given
        if token is None:
            raise SubjectMissing(
                "The transaction carries no appAccountToken: send app_account_token"
            )
        now = self.service.clock()
        try:
            facts = transaction_facts(
                tx,
                None,
                state=recompute(tx, None, now),
                event="TRANSACTION",
                event_at=datetime_from_epoch_ms(tx.signedDate) or now,
                from_device=True,
            )
        except ValueError:
            raise InvalidSignedPayload(
                "The transaction carries dates outside 1970-9999",
                extra={"reason": "malformed_payload"},
            ) from None
        facts.subject = token
        await self.service.apply(facts)
        return await self.service.answer_for_subject(token)

    # -- the App Store ------------------------------------------------------------------------

    async def app_store_notification(self, verified: VerifiedNotification) -> None:
        """Follower of POST /ios/notifications/{app_id} (after verification and de-duplication)."""
        try:
            facts = notification_facts(verified, self.service.clock())
        except ValueError:
            return  # dates outside 1970-9999: nothing to apply
        if facts is not None:
            outcome = await self.service.apply(facts)
            log.info("entitlement_notification", outcome=outcome.status, store_event=facts.event)

    def _appstore_credentials(self) -> AppStoreCredentials | None:
        config = self.tenant.config
        key = self._secrets().appstore_api_key_p8
        if not (config.appstore_issuer_id and config.appstore_key_id and key and config.bundle_id):
            return None
        return AppStoreCredentials(
            config.appstore_issuer_id, config.appstore_key_id, key, config.bundle_id
        )

    async def reconcile(self, notifications: Any) -> ReconcileReport:
        """Ask the App Store about sources near lapse or in a billing state, then read the
        notification history since the last one seen (`notifications` applies each payload:
        the storekit NotificationService, whose de-duplication makes overlaps harmless)."""
        credentials = self._appstore_credentials()
        if credentials is None:
            return ReconcileReport(status="not_configured")
        report = ReconcileReport()
        now = self.service.clock()
        config = self.tenant.config
        try:
            rows = await self.service.sources.to_reconcile(
                "app_store", now + timedelta(days=1), RECONCILE_BATCH
            )
            for row in rows:
                reference = self.service.open_reference(row)
                if reference is None:
                    continue
                report.checked += 1
                found = await self.providers.appstore.statuses(
                    credentials, row.environment, reference
                )
                for status, original, signed_tx, signed_renewal in found:
                    if original != reference or not signed_tx:
                        continue
                    try:
                        tx, renewal = await self.providers.verifier.verify_status(
                            signed_tx, signed_renewal, config.bundle_id, config.app_apple_id
                        )
                        state = STATUS_STATE.get(status or 0) or recompute(tx, renewal, now)
                        stamps = [
                            datetime_from_epoch_ms(tx.signedDate),
                            datetime_from_epoch_ms(renewal.signedDate) if renewal else None,
                        ]
                        facts = transaction_facts(
                            tx,
                            renewal,
                            state=state,
                            event="RECONCILED",
                            event_at=max([s for s in stamps if s is not None], default=now),
                        )
                    except (SignedDataInvalid, ValueError):
                        log.warning("entitlement_reconcile_unverifiable")
                        continue
                    outcome = await self.service.apply(facts)
                    report.updated += outcome.status == "applied"
            for environment in ("production", "sandbox"):
                report.recovered += await self._history(
                    credentials, environment, notifications, now
                )
        except StoreApiUnavailable as exc:
            report.status, report.detail = "failed", str(exc)
        return report

    async def _history(
        self, credentials: AppStoreCredentials, environment: str, notifications: Any, now: datetime
    ) -> int:
        cursors = self.service.cursors
        since = await cursors.get(environment) or now - FIRST_HISTORY_WINDOW
        since = max(since - HISTORY_OVERLAP, now - MAX_HISTORY_WINDOW)
        payloads = await self.providers.appstore.history(
            credentials,
            environment,
            int(since.timestamp() * 1000),
            int(now.timestamp() * 1000),
        )
        recovered = 0
        for payload in payloads:
            try:
                out = await notifications.receive(payload)
            except ProblemError:
                continue  # unverifiable: counted by the notification service
            recovered += out.status != "duplicate"
        policy = self.service.policy
        await cursors.put(
            environment, now, now, policy.expires_at("entitlement_reconcile_cursors", None, now)
        )
        return recovered

    # -- Stripe -------------------------------------------------------------------------------

    async def checkout(
        self, token: str, price_id: str, success_url: str, cancel_url: str, mode: str
    ) -> CheckoutCreated:
        canonical = canonical_token(token)
        if not is_mapped(self.tenant.config, price_id):
            raise PriceNotMapped(f"price {price_id[:80]!r} grants no entitlement of this app")
        origins = self.tenant.config.cors_origins
        for name, url in (("success_url", success_url), ("cancel_url", cancel_url)):
            if not _on_origins(url, origins):
                raise ReturnUrlNotAllowed(
                    f"{name} must be on one of this app's CORS origins "
                    "(stateless tenants configure --cors-origin)",
                    extra={
                        "errors": [
                            {"loc": ["body", name], "msg": "not an allowed origin", "type": "url"}
                        ]
                    },
                )
        secret = self._secrets().stripe_secret_key
        if not secret:
            raise StripeNotConfigured(
                "Stripe is not set up for this app (stateless tenants configure "
                "--stripe-secret-key)"
            )
        try:
            return await self.providers.stripe.create_checkout(
                secret,
                mode=mode,
                price_id=price_id,
                token=canonical,
                success_url=success_url,
                cancel_url=cancel_url,
            )
        except StripeUnavailable as exc:
            raise StoreUnavailable(exc.detail) from None

    async def stripe_webhook(self, payload: bytes, header: str | None) -> dict[str, str]:
        """Verify `Stripe-Signature` (unknown app and bad signature answer the same), then apply
        the event once."""
        secrets = self._secrets()
        secret = secrets.stripe_webhook_secret or _NO_SECRET
        if (
            not header
            or len(payload) > MAX_EVENT_BYTES
            or not verify_signature(payload, header, secret)
            or not secrets.stripe_webhook_secret
        ):
            raise InvalidStripeWebhook("The Stripe-Signature header does not verify")
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise InvalidStripeWebhook("The webhook body is not a Stripe event") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise InvalidStripeWebhook("The webhook body is not a Stripe event")
        kind = str(event["type"])[:128]
        event_id, created = event.get("id"), event.get("created")
        obj = (
            (event.get("data") or {}).get("object") if isinstance(event.get("data"), dict) else None
        )
        if kind not in HANDLED_EVENTS or not isinstance(event_id, str) or not isinstance(obj, dict):
            return {"status": "ignored", "event_type": kind}
        if isinstance(created, bool) or not isinstance(created, int) or not 0 < created < 2**35:
            return {"status": "ignored", "event_type": kind}
        if not await self.service.first_time(f"stripe:{event_id[:255]}"):
            return {"status": "duplicate", "event_type": kind}
        event_at = datetime.fromtimestamp(created, UTC)
        try:
            applied = await self._stripe_event(kind, obj, event_at, secrets.stripe_secret_key)
        except StripeUnavailable as exc:
            raise StoreUnavailable(exc.detail) from None
        return {"status": "processed" if applied else "ignored", "event_type": kind}

    async def _fetch(self, secret: str | None, subscription_id: str) -> dict[str, Any] | None:
        if not secret:
            return None
        return await self.providers.stripe.subscription(secret, subscription_id)

    async def _stripe_event(
        self, kind: str, obj: dict[str, Any], event_at: datetime, secret: str | None
    ) -> bool:
        if kind in SUBSCRIPTION_EVENTS:
            facts = subscription_facts(obj, event=kind, event_at=event_at)
            if facts is None:
                return False
            return (await self.service.apply(facts)).status == "applied"
        if kind == "checkout.session.completed":
            if obj.get("mode") == "payment":
                facts = payment_facts(obj, event=kind, event_at=event_at)
                return facts is not None and (await self.service.apply(facts)).status == "applied"
            sub_id = obj.get("subscription")
            sub = await self._fetch(secret, sub_id) if isinstance(sub_id, str) else None
            facts = subscription_facts(sub, event=kind, event_at=event_at) if sub else None
            if facts is None:
                return False
            facts.subject = facts.subject or token_or_none(obj.get("client_reference_id"))
            return (await self.service.apply(facts)).status == "applied"
        if kind in ("invoice.paid", "invoice.payment_failed"):
            sub_id = invoice_subscription(obj)
            sub = await self._fetch(secret, sub_id) if sub_id else None
            facts = subscription_facts(sub, event=kind, event_at=event_at) if sub else None
            if facts is None:
                return False
            if kind == "invoice.paid":
                facts.payment = invoice_payment(obj)
                facts.revenue = invoice_revenue(obj)
                facts.renewal_paid = obj.get("billing_reason") == "subscription_cycle"
            return (await self.service.apply(facts)).status == "applied"
        # charge.refunded: a full refund revokes what the payment paid for
        amount, refunded = obj.get("amount"), obj.get("amount_refunded")
        full = obj.get("refunded") is True or (
            isinstance(amount, int) and isinstance(refunded, int) and refunded >= amount > 0
        )
        intent = obj.get("payment_intent")
        if not full or not isinstance(intent, str) or not intent:
            return False
        outcome = await self.service.revoke_payment(intent[:255], event_at, kind)
        return outcome.status == "applied"
