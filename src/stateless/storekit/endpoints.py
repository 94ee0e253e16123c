"""StoreKit API: purchase validation (app key) and App Store Server Notifications V2 (no key)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.container import Container
from stateless.deps import API_V1, KeyedService, PathService, api_router
from stateless.kit.data.context import TenantContext
from stateless.kit.web.openapi import problems
from stateless.storekit.receipts import ProviderError
from stateless.storekit.schemas import (
    NotificationIn,
    NotificationOut,
    ValidateReceiptIn,
    ValidateReceiptOut,
)
from stateless.storekit.service import InvalidSignedPayload, NotificationService, StoreKitService
from stateless.storekit.wiring import notification_service, storekit_service

router = api_router(f"{API_V1}/ios", ["storekit"])


def _validation(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> StoreKitService:
    return storekit_service(container, session, tenant)


def _notifications(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> NotificationService:
    return notification_service(container, session, tenant)


Validation = Annotated[StoreKitService, Depends(KeyedService(_validation, "any"))]
# The app id in the path names the tenant; the signed payload is the proof.
Notifications = Annotated[NotificationService, Depends(PathService(_notifications))]


@router.post(
    "/validate-receipt",
    name="ios.validate_receipt",
    summary="Validate a StoreKit purchase",
    response_model=ValidateReceiptOut,
    responses=problems(ProviderError),
)
async def validate_receipt(body: ValidateReceiptIn, service: Validation) -> Any:
    """Validate a StoreKit 2 signed transaction or a legacy receipt. Unverifiable -> `invalid`."""
    return JSONResponse(await service.validate(body))


@router.post(
    "/notifications/{app_id}",
    name="ios.notifications",
    summary="Receive an App Store server notification",
    response_model=NotificationOut,
    responses=problems(InvalidSignedPayload),
)
async def app_store_notification(
    app_id: str, body: NotificationIn, service: Notifications
) -> NotificationOut:
    """App Store Server Notifications V2 endpoint (Apple calls it; the JWS is the proof)."""
    return await service.receive(body.signedPayload)
