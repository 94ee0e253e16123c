"""Entitlements API: one answer to "may this subscriber use Pro right now?" (SPEC 13)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.container import Container
from stateless.deps import API_V1, KeyedService, PathService, api_router
from stateless.entitlements.catalog import (
    InvalidAppAccountToken,
    InvalidEntitlementMap,
    canonical_token,
    validate_map,
)
from stateless.entitlements.flows import (
    InvalidStripeWebhook,
    PriceNotMapped,
    PurchaseFlows,
    ReturnUrlNotAllowed,
    StoreUnavailable,
    StripeNotConfigured,
    SubjectMismatch,
    SubjectMissing,
)
from stateless.entitlements.schemas import (
    CheckIn,
    CheckOut,
    CheckoutIn,
    CheckoutOut,
    EntitlementMapIn,
    EntitlementMapOut,
    EntitlementProducts,
    ReconcileOut,
    StatsOut,
    StripeWebhookOut,
    TransactionIn,
)
from stateless.entitlements.service import EntitlementService, InvalidDateWindow
from stateless.entitlements.wiring import entitlement_service, purchase_flows, reconcile_tenant
from stateless.kit.data.context import TenantContext
from stateless.kit.web.openapi import problems
from stateless.storekit.service import InvalidSignedPayload
from stateless.tenants.service import TenantService

router = api_router(f"{API_V1}/entitlements", ["entitlements"])
admin_router = api_router(f"{API_V1}/admin/entitlements", ["entitlements"])


def _service(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> EntitlementService:
    return entitlement_service(container, session, tenant)


def _flows(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> PurchaseFlows:
    return purchase_flows(container, session, tenant)


class MapEditor:
    """The entitlement map of the request's tenant, read and written through its settings."""

    def __init__(self, container: Container, session: AsyncSession, tenant: TenantContext) -> None:
        self.container = container
        self.tenants = TenantService(session, container.privacy)
        self.tenant = tenant

    async def replace(self, entitlements: dict[str, list[str]]) -> dict[str, list[str]]:
        clean = validate_map(entitlements)
        stored = await self.tenants.change_entitlements(self.tenant.app_id, lambda _: clean)
        self.container.directory.invalidate(self.tenant.app_id)
        return stored


class Reconciler:
    def __init__(self, container: Container, session: AsyncSession, tenant: TenantContext) -> None:
        self.container, self.session, self.tenant = container, session, tenant

    async def run(self) -> Any:
        return await reconcile_tenant(self.container, self.session, self.tenant)


def _editor(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> MapEditor:
    return MapEditor(container, session, tenant)


def _reconciler(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> Reconciler:
    return Reconciler(container, session, tenant)


Entitlements = Annotated[EntitlementService, Depends(KeyedService(_service, "any"))]
SecretEntitlements = Annotated[EntitlementService, Depends(KeyedService(_service, "secret"))]
Flows = Annotated[PurchaseFlows, Depends(KeyedService(_flows, "any"))]
# The app id in the path names the tenant; Stripe-Signature is the proof.
WebhookFlows = Annotated[PurchaseFlows, Depends(PathService(_flows))]
Editor = Annotated[MapEditor, Depends(KeyedService(_editor, "secret"))]
Reconciliation = Annotated[Reconciler, Depends(KeyedService(_reconciler, "secret"))]


@router.post(
    "/check",
    name="entitlements.check",
    response_model=CheckOut,
    summary="Check a subscriber's entitlements",
    responses=problems(InvalidAppAccountToken),
)
async def check(body: CheckIn, service: Entitlements) -> Any:
    """Is this subscriber entitled, until when, and from which store: every entitlement of the
    app's map, inactive ones with their last known dates (or null fields when never bought).

    Active means active, cancelled but not yet expired, or in a billing grace period. POST keeps
    the token out of URLs and access logs.
    """
    return await service.check(canonical_token(body.app_account_token))


@router.post(
    "/transactions",
    name="entitlements.transactions",
    response_model=CheckOut,
    summary="Record a StoreKit 2 transaction",
    responses=problems(
        InvalidSignedPayload, SubjectMismatch, SubjectMissing, InvalidAppAccountToken
    ),
)
async def transactions(body: TransactionIn, flows: Flows) -> Any:
    """Send each `Transaction.currentEntitlements` JWS on launch and restore; answers the
    subject's entitlements, as `/check` does.

    The JWS is verified like validate-receipt (chain to Apple's root, bundle id, environment).
    Its `appAccountToken` names the subject; for purchases made before the app set one, send
    `app_account_token` (both present and different: 409 `subject_mismatch`).
    """
    return await flows.record_transaction(body.signed_transaction, body.app_account_token)


@router.post(
    "/stripe/checkout",
    name="entitlements.stripe_checkout",
    response_model=CheckoutOut,
    summary="Start a Stripe Checkout for a subscriber",
    responses=problems(
        PriceNotMapped,
        ReturnUrlNotAllowed,
        StripeNotConfigured,
        StoreUnavailable,
        InvalidAppAccountToken,
    ),
)
async def stripe_checkout(body: CheckoutIn, flows: Flows) -> CheckoutOut:
    """A Stripe Checkout Session for a price of the entitlement map, linked to the subscriber's
    `app_account_token`: redirect the browser to `url`, then call `/check`.

    `success_url` and `cancel_url` must be on one of the app's CORS origins (422 otherwise).
    """
    created = await flows.checkout(
        body.app_account_token, body.price_id, body.success_url, body.cancel_url, body.mode
    )
    return CheckoutOut(url=created.url, expires_at=created.expires_at)


@router.post(
    "/stripe/webhook/{app_id}",
    name="entitlements.stripe_webhook",
    response_model=StripeWebhookOut,
    summary="Receive a Stripe webhook event",
    responses=problems(InvalidStripeWebhook, StoreUnavailable),
)
async def stripe_webhook(app_id: str, request: Request, flows: WebhookFlows) -> StripeWebhookOut:
    """Stripe calls this (no key: `Stripe-Signature` is the proof, 5-minute tolerance). Point
    the app's webhook endpoint here, with the events listed in docs/entitlements.md.

    An unknown app and a bad signature get the same 400.
    """
    payload = await request.body()
    answer = await flows.stripe_webhook(payload, request.headers.get("stripe-signature"))
    return StripeWebhookOut.model_validate(answer)


@router.get(
    "/stats",
    name="entitlements.stats",
    response_model=StatsOut,
    summary="Entitlement figures per day",
    responses=problems(InvalidDateWindow),
)
async def stats(
    service: SecretEntitlements,
    since: Annotated[
        date | None, Query(description="First UTC day (default: 89 days back).")
    ] = None,
    until: Annotated[date | None, Query(description="Last UTC day (default: today).")] = None,
) -> Any:
    """Per day, entitlement, store and product: new, renewals, cancellations, billing issues,
    expirations, refunds and revenue per currency; and the subjects entitled now. Aggregates
    only, kept 90 days."""
    return await service.stats(since, until)


@admin_router.put(
    "",
    name="admin.entitlements_put",
    response_model=EntitlementMapOut,
    summary="Replace the entitlement map",
    responses=problems(InvalidEntitlementMap),
)
async def put_entitlements(body: EntitlementMapIn, editor: Editor) -> EntitlementMapOut:
    """Set the whole map: entitlement names (`^[a-z0-9_.-]{1,64}$`) and the App Store product
    ids and Stripe price or product ids granting each. Answers the map as stored."""
    stored = await editor.replace({k: v.products for k, v in body.entitlements.items()})
    return EntitlementMapOut(
        tenant=editor.tenant.app_id,
        entitlements={k: EntitlementProducts(products=v) for k, v in stored.items()},
    )


@admin_router.post(
    "/reconcile",
    name="admin.entitlements_reconcile",
    response_model=ReconcileOut,
    summary="Reconcile App Store entitlements now",
)
async def reconcile(reconciler: Reconciliation) -> Any:
    """Ask the App Store Server API about sources near lapse or in a billing state, and read
    the notification history since the last one seen (also runs every
    ENTITLEMENT_RECONCILE_SECONDS in the background)."""
    report = await reconciler.run()
    return ReconcileOut.model_validate(report, from_attributes=True)
