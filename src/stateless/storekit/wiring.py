"""Builds the StoreKit services from the app's providers, and the providers once per app: trusted roots (file reads, off the event loop),
the JWS verifier and the HTTP client for Apple's legacy verifyReceipt."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from stateless import __version__
from stateless.affiliate.wiring import affiliate_service
from stateless.container import Container
from stateless.storekit.receipts import VerifyReceiptClient
from stateless.storekit.service import NotificationService, StoreKitProviders, StoreKitService
from stateless.storekit.verifier import StoreKitVerifier, load_root_certificates
from stateless.tenants.schemas import TenantContext

if TYPE_CHECKING:
    from stateless.config import Settings


async def build_storekit(settings: Settings, stack: AsyncExitStack) -> StoreKitProviders:
    roots = await asyncio.to_thread(load_root_certificates, settings.apple_root_certs_dir)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.apple_verify_receipt_timeout_seconds, connect=5.0),
        headers={"User-Agent": f"stateless-backend/{__version__}"},
        follow_redirects=False,
    )
    stack.push_async_callback(http.aclose)
    return StoreKitProviders(
        verifier=StoreKitVerifier(roots),
        receipts=VerifyReceiptClient(
            http,
            settings.apple_verify_receipt_url,
            settings.apple_verify_receipt_sandbox_url,
        ),
    )


def storekit_service(
    container: Container, session: AsyncSession, tenant: TenantContext
) -> StoreKitService:
    return StoreKitService(
        session,
        tenant,
        kit=container.privacy,
        providers=container.storekit,
        metrics=container.metrics,
        affiliate=affiliate_service(container, session, tenant),
    )


def notification_service(
    container: Container, session: AsyncSession, tenant: TenantContext
) -> NotificationService:
    return NotificationService(
        session,
        tenant,
        kit=container.privacy,
        providers=container.storekit,
        policy=container.lifecycle.policy,
        metrics=container.metrics,
        followers=tuple(
            build(container, session, tenant) for build in container.storekit_followers
        ),
    )
