"""StoreKit API: purchase validation (app key) and App Store Server Notifications V2 (no key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from stateless.deps import API_V1, ContainerDep, SessionDep
from stateless.storekit.schemas import (
    NotificationIn,
    NotificationOut,
    ValidateReceiptIn,
    ValidateReceiptOut,
)
from stateless.storekit.wiring import notification_service, storekit_service
from stateless.tenants.auth import AnyKeyTenant, tenant_from_path

router = APIRouter(prefix=f"{API_V1}/ios", tags=["storekit"])


@router.post(
    "/validate-receipt",
    name="ios.validate_receipt",
    response_model=ValidateReceiptOut,
    responses={502: {"description": "Apple's verifyReceipt failed (legacy receipts only)"}},
)
async def validate_receipt(
    body: ValidateReceiptIn,
    tenant: AnyKeyTenant,
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """Validate a StoreKit 2 signed transaction or a legacy receipt. Unverifiable -> `invalid`."""
    service = storekit_service(container, session, tenant)
    return JSONResponse(await service.validate(body))


@router.post(
    "/notifications/{app_id}",
    name="ios.notifications",
    response_model=NotificationOut,
    responses={400: {"description": "Unverifiable payload; nothing recorded"}},
)
async def app_store_notification(
    app_id: str,
    body: NotificationIn,
    request: Request,
    session: SessionDep,
    container: ContainerDep,
) -> NotificationOut:
    """App Store Server Notifications V2 endpoint (Apple calls it; the JWS is the proof)."""
    tenant = await tenant_from_path(request, container, app_id)
    service = notification_service(container, session, tenant)
    return await service.receive(body.signedPayload)
