"""Builds the entitlement providers once per app, and the services and flows per request."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from stateless import __version__
from stateless.config import Settings
from stateless.container import Container
from stateless.entitlements.appstore import AppStoreApi, assert_library_hooks
from stateless.entitlements.flows import EntitlementProviders, PurchaseFlows
from stateless.entitlements.service import EntitlementService
from stateless.entitlements.stripe_billing import StripeGateway
from stateless.kit.data.context import TenantContext
from stateless.storekit.service import NotificationFollower, StoreKitProviders
from stateless.storekit.wiring import notification_service


async def build_entitlements(
    settings: Settings, storekit: StoreKitProviders, stack: AsyncExitStack
) -> EntitlementProviders:
    assert_library_hooks()
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.store_api_timeout_seconds, connect=5.0),
        headers={"User-Agent": f"stateless-backend/{__version__}"},
        follow_redirects=False,
        trust_env=False,
    )
    stack.push_async_callback(http.aclose)
    stripe = StripeGateway(settings.stripe_api_url, settings.store_api_timeout_seconds)
    stack.push_async_callback(stripe.aclose)
    return EntitlementProviders(
        verifier=storekit.verifier,
        appstore=AppStoreApi(settings.appstore_api_url, settings.appstore_api_sandbox_url, http),
        stripe=stripe,
    )


def entitlement_service(
    container: Container, session: AsyncSession, tenant: TenantContext
) -> EntitlementService:
    return EntitlementService(
        session, tenant, kit=container.privacy, policy=container.lifecycle.policy
    )


def purchase_flows(
    container: Container, session: AsyncSession, tenant: TenantContext
) -> PurchaseFlows:
    assert container.entitlements is not None, "open_container builds the entitlement providers"
    return PurchaseFlows(
        entitlement_service(container, session, tenant),
        tenant,
        kit=container.privacy,
        providers=container.entitlements,
    )


def notification_follower(
    container: Container, session: AsyncSession, tenant: TenantContext
) -> NotificationFollower:
    """App Store notifications drive entitlement sources (storekit's NotificationService)."""
    return purchase_flows(container, session, tenant).app_store_notification


async def reconcile_tenant(
    container: Container, session: AsyncSession, tenant: TenantContext
) -> object:
    flows = purchase_flows(container, session, tenant)
    return await flows.reconcile(notification_service(container, session, tenant))
