"""The App Store side: what a verified transaction or notification says about a source, and the
App Store Server API (Apple's own `app-store-server-library`, async client) for reconciliation.

The library chooses Apple's host from the environment; `APPSTORE_API_URL` and
`APPSTORE_API_SANDBOX_URL` replace it through the client's one URL hook, `_get_full_url`. That is
a private method: the library is pinned to one minor version and `assert_library_hooks` refuses
to start when the hook is gone or changed shape.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from importlib.metadata import version
from typing import Any

import httpx
from appstoreserverlibrary.api_client import (
    APIException,
    AsyncAppStoreServerAPIClient,
    BaseAppStoreServerAPIClient,
)
from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.models.JWSRenewalInfoDecodedPayload import (
    JWSRenewalInfoDecodedPayload,
)
from appstoreserverlibrary.models.JWSTransactionDecodedPayload import (
    JWSTransactionDecodedPayload,
)
from appstoreserverlibrary.models.NotificationHistoryRequest import NotificationHistoryRequest

from stateless.entitlements.catalog import token_or_none
from stateless.entitlements.service import minor_amount
from stateless.entitlements.states import SourceFacts, State
from stateless.kit.wire.bounds import datetime_from_epoch_ms
from stateless.storekit.verifier import VerifiedNotification

LIBRARY = "app-store-server-library"
LIBRARY_SERIES = "3.1."
PURCHASE_EVENTS = ("SUBSCRIBED", "DID_RENEW", "OFFER_REDEEMED")
# StatusResponse `status`: 1 active, 2 expired, 3 billing retry, 4 grace period, 5 revoked.
STATUS_STATE: dict[int, State] = {
    1: "active",
    2: "expired",
    3: "billing_retry",
    4: "grace",
    5: "revoked",
}
RETRY_STATUSES = (429, 500, 502, 503, 504)


class StoreApiUnavailable(Exception):
    """The store's API could not answer (after retries); nothing was changed."""


def assert_library_hooks() -> None:
    """At startup: the installed app-store-server-library is the series we read, and the URL
    hook we override still exists with the same shape."""
    installed = version(LIBRARY)
    if not installed.startswith(LIBRARY_SERIES):
        raise RuntimeError(
            f"{LIBRARY} {installed} is installed; stateless-backend is built against "
            f"{LIBRARY_SERIES}x (its URL hook is private): install the locked version"
        )
    hook = getattr(BaseAppStoreServerAPIClient, "_get_full_url", None)
    if hook is None or list(inspect.signature(hook).parameters) != ["self", "path"]:
        raise RuntimeError(f"{LIBRARY} {installed}: _get_full_url(self, path) is gone")


def _ms(value: object) -> datetime | None:
    return datetime_from_epoch_ms(value)


def _environment(raw: object) -> str:
    return "sandbox" if raw == "Sandbox" else "production"


def _period_type(tx: JWSTransactionDecodedPayload) -> str:
    if tx.rawOfferDiscountType == "FREE_TRIAL":
        return "trial"
    if tx.rawOfferType == 1:
        return "intro"
    return "normal"


def recompute(
    tx: JWSTransactionDecodedPayload,
    renewal: JWSRenewalInfoDecodedPayload | None,
    now: datetime,
) -> State:
    """The state from the transaction and renewal info alone."""
    if tx.revocationDate is not None:
        return "revoked"
    expires = _ms(tx.expiresDate)
    will_renew = renewal is None or renewal.rawAutoRenewStatus != 0
    if expires is None or expires > now:
        return "active" if will_renew else "cancelled"
    grace = _ms(renewal.gracePeriodExpiresDate) if renewal is not None else None
    if grace is not None and grace > now:
        return "grace"
    if renewal is not None and renewal.isInBillingRetryPeriod:
        return "billing_retry"
    return "expired"


def notification_state(
    kind: str,
    subtype: str | None,
    tx: JWSTransactionDecodedPayload,
    renewal: JWSRenewalInfoDecodedPayload | None,
    now: datetime,
) -> State:
    """SPEC 13's table: what each notification type sets."""
    if kind in ("REFUND", "REVOKE"):
        return "revoked"
    if tx.revocationDate is not None and kind != "REFUND_REVERSED":
        return "revoked"
    if kind in PURCHASE_EVENTS:
        return "cancelled" if renewal is not None and renewal.rawAutoRenewStatus == 0 else "active"
    if kind == "DID_CHANGE_RENEWAL_STATUS":
        return "cancelled" if subtype == "AUTO_RENEW_DISABLED" else "active"
    if kind == "DID_FAIL_TO_RENEW":
        return "grace" if subtype == "GRACE_PERIOD" else "billing_retry"
    if kind in ("GRACE_PERIOD_EXPIRED", "EXPIRED"):
        return "expired"
    return recompute(tx, renewal, now)  # REFUND_REVERSED, RENEWAL_EXTENDED, and the rest


def transaction_facts(
    tx: JWSTransactionDecodedPayload,
    renewal: JWSRenewalInfoDecodedPayload | None,
    *,
    state: State,
    event: str,
    event_at: datetime,
    from_device: bool = False,
    paid: bool = False,
) -> SourceFacts:
    """Facts about one original transaction. Dates outside 1970-9999 raise ValueError."""
    will_renew = tx.expiresDate is not None and (
        renewal.rawAutoRenewStatus != 0 if renewal is not None else state == "active"
    )
    revenue = None
    if paid and isinstance(tx.price, int) and 0 <= tx.price <= 10**15 and tx.currency:
        revenue = minor_amount(Decimal(tx.price) / 1000, tx.currency)
    grace = _ms(renewal.gracePeriodExpiresDate) if renewal is not None else None
    return SourceFacts(
        store="app_store",
        reference=str(tx.originalTransactionId),
        product_id=str(tx.productId or "unknown")[:256],
        state=state,
        environment=_environment(tx.rawEnvironment),
        event_at=event_at,
        event=event,
        subject=token_or_none(tx.appAccountToken),
        period_type=_period_type(tx),
        will_renew=bool(will_renew) and state in ("active", "grace"),
        purchased_at=_ms(tx.originalPurchaseDate) or _ms(tx.purchaseDate),
        period_ends_at=_ms(tx.expiresDate),
        grace_ends_at=grace if state in ("grace", "billing_retry") else None,
        revoked_at=(_ms(tx.revocationDate) or event_at) if state == "revoked" else None,
        from_device=from_device,
        revenue=revenue,
        renewal_paid=paid and event == "DID_RENEW",
    )


def notification_facts(verified: VerifiedNotification, now: datetime) -> SourceFacts | None:
    """Facts from a verified notification that carries a transaction; None otherwise."""
    tx = verified.transaction
    if tx is None or not tx.originalTransactionId:
        return None
    payload = verified.payload
    kind = str(payload.rawNotificationType)
    subtype = str(payload.rawSubtype) if payload.rawSubtype else None
    state = notification_state(kind, subtype, tx, verified.renewal, now)
    event_at = _ms(payload.signedDate) or now
    return transaction_facts(
        tx,
        verified.renewal,
        state=state,
        event=kind,
        event_at=event_at,
        paid=kind in PURCHASE_EVENTS,
    )


# -- the App Store Server API ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppStoreCredentials:
    issuer_id: str
    key_id: str
    private_key_pem: str
    bundle_id: str


class _PointedClient(AsyncAppStoreServerAPIClient):
    """Apple's async client, sent to our configured host and our shared HTTP client."""

    def __init__(
        self, credentials: AppStoreCredentials, base_url: str, http: httpx.AsyncClient, env: str
    ) -> None:
        super().__init__(
            credentials.private_key_pem.encode(),
            credentials.key_id,
            credentials.issuer_id,
            credentials.bundle_id,
            Environment.SANDBOX if env == "sandbox" else Environment.PRODUCTION,
        )
        owned = self.http_client
        self.http_client = http
        self._owned = owned
        self._pointed_base = base_url

    def _get_full_url(self, path: str) -> str:
        return self._pointed_base + path

    async def close(self) -> None:
        await self._owned.aclose()


class AppStoreApi:
    """Built once per app: the base URLs and one HTTP client; a client per call's tenant."""

    def __init__(
        self,
        production_url: str,
        sandbox_url: str,
        http: httpx.AsyncClient,
        *,
        attempts: int = 3,
        backoff_seconds: float = 0.5,
    ) -> None:
        self.urls = {"production": production_url, "sandbox": sandbox_url}
        self.http = http
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds

    async def _call(self, credentials: AppStoreCredentials, environment: str, call: Any) -> Any:
        client = _PointedClient(credentials, self.urls[environment], self.http, environment)
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    return await call(client)
                except APIException as exc:
                    if exc.http_status_code == 404:
                        return None
                    if exc.http_status_code not in RETRY_STATUSES or attempt == self.attempts:
                        raise StoreApiUnavailable(
                            f"App Store Server API answered {exc.http_status_code}"
                        ) from None
                except httpx.HTTPError as exc:
                    if attempt == self.attempts:
                        raise StoreApiUnavailable(
                            f"App Store Server API unreachable: {type(exc).__name__}"
                        ) from None
                await asyncio.sleep(self.backoff_seconds * attempt)
            return None
        finally:
            await client.close()

    async def statuses(
        self, credentials: AppStoreCredentials, environment: str, transaction_id: str
    ) -> list[tuple[int | None, str | None, str | None, str | None]]:
        """(status, original transaction id, signed transaction, signed renewal) per item."""

        async def call(client: _PointedClient) -> Any:
            return await client.get_all_subscription_statuses(transaction_id)

        response = await self._call(credentials, environment, call)
        found: list[tuple[int | None, str | None, str | None, str | None]] = []
        for group in (response.data or []) if response is not None else []:
            for item in group.lastTransactions or []:
                found.append(
                    (
                        item.rawStatus,
                        item.originalTransactionId,
                        item.signedTransactionInfo,
                        item.signedRenewalInfo,
                    )
                )
        return found

    async def history(
        self,
        credentials: AppStoreCredentials,
        environment: str,
        since_ms: int,
        until_ms: int,
        max_pages: int = 50,
    ) -> list[str]:
        """Signed payloads of the notifications sent in [since, until], every page."""
        payloads: list[str] = []
        token: str | None = None
        for _ in range(max_pages):
            request = NotificationHistoryRequest(startDate=since_ms, endDate=until_ms)

            async def call(
                client: _PointedClient,
                token: str | None = token,
                request: NotificationHistoryRequest = request,
            ) -> Any:
                return await client.get_notification_history(token, request)

            response = await self._call(credentials, environment, call)
            if response is None:
                break
            for item in response.notificationHistory or []:
                if item.signedPayload:
                    payloads.append(item.signedPayload)
            if not response.hasMore or not response.paginationToken:
                break
            token = response.paginationToken
        return payloads
