"""StoreKit API: purchase validation (app key) and App Store Server Notifications V2 (no key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from stateless.deps import API_V1, ContainerDep, SessionDep
from stateless.kit.errors import BadRequest
from stateless.storekit.schemas import (
    NotificationIn,
    NotificationOut,
    ValidateReceiptIn,
    ValidateReceiptOut,
)
from stateless.storekit.service import NotificationService, StoreKitProviders, StoreKitService
from stateless.storekit.verifier import SignedDataInvalid
from stateless.tenants.auth import AnyKeyTenant, enforce_rate_limit
from stateless.tenants.schemas import APP_ID_PATTERN, MAX_APP_ID_LENGTH, VerifiedAppId

router = APIRouter(prefix=f"{API_V1}/ios", tags=["storekit"])

# Left out of the body when unset; the documented core fields are always present.
_OPTIONAL_FIELDS = ("reason", "grace_period_expires_at", "affiliate")


class InvalidSignedPayload(BadRequest):
    code = "invalid_signed_payload"


# What an unknown (or not yet configured) app is verified against: no genuine payload names
# this bundle or app id, so the same verifier answers it exactly as for a known app.
_NO_BUNDLE_ID = "invalid.stateless.no-such-app"
_NO_APP_APPLE_ID = 0


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
    service = StoreKitService(session, tenant, container)
    if body.signed_transaction is not None:
        verdict = await service.from_signed_transaction(body.signed_transaction)
    else:
        verdict = await service.from_receipt(body.receipt_data or "")
    proof = "signed_transaction" if body.signed_transaction is not None else "receipt"
    container.metrics.storekit_validations.labels(proof=proof, status=verdict.status).inc()
    out = verdict.out(tenant.app_id)
    if body.affiliate_code is not None and verdict.status == "valid":
        out.affiliate = await service.record_purchase(body.affiliate_code, verdict)
    data = out.model_dump(mode="json")
    for name in _OPTIONAL_FIELDS:
        if data.get(name) is None:
            data.pop(name, None)
    return JSONResponse(data)


def _checked_app_id(app_id: str) -> str:
    """SPEC 2's app id rules, applied to the path segment."""
    if len(app_id) > MAX_APP_ID_LENGTH:
        raise BadRequest(f"app_id is too long (at most {MAX_APP_ID_LENGTH} characters)").with_code(
            "invalid_app_id"
        )
    if not APP_ID_PATTERN.fullmatch(app_id):
        raise BadRequest(
            "Invalid tenant ID format: use letters, digits, '-' and '_' only"
        ).with_code("invalid_app_id")
    return app_id


@router.post(
    "/notifications/{app_id}",
    name="ios.notifications",
    response_model=NotificationOut,
    responses={
        400: {
            "description": "Unverifiable payload, or an unknown app (same answer); nothing recorded"
        }
    },
)
async def app_store_notification(
    app_id: str,
    body: NotificationIn,
    request: Request,
    session: SessionDep,
    container: ContainerDep,
) -> NotificationOut:
    """App Store Server Notifications V2 endpoint (Apple calls it; the JWS is the proof).

    An unknown app id answers exactly as a known app does for a payload it cannot verify, so
    the endpoint does not reveal which app ids exist.
    """
    snapshot = await container.directory.get(_checked_app_id(app_id))
    if snapshot is not None:
        request.state.tenant = snapshot.app_id
    overrides = snapshot.config.rate_limits if snapshot is not None else None
    await enforce_rate_limit(request, container, app_id, overrides)
    providers: StoreKitProviders = container.services["storekit"]
    config = snapshot.config if snapshot is not None else None
    bundle_id = (config.bundle_id if config else None) or _NO_BUNDLE_ID
    app_apple_id = config.app_apple_id if config and config.app_apple_id else _NO_APP_APPLE_ID
    try:
        verified = await providers.verifier.verify_notification(
            body.signedPayload, bundle_id, app_apple_id
        )
    except SignedDataInvalid as exc:
        container.metrics.storekit_notifications.labels(outcome="rejected").inc()
        raise InvalidSignedPayload(
            f"The notification could not be verified: {exc.reason}",
            extra={"reason": exc.reason},
        ) from None
    if snapshot is None:  # unreachable in practice: no genuine payload names the placeholders
        raise InvalidSignedPayload(
            "The notification could not be verified: wrong_bundle_id",
            extra={"reason": "wrong_bundle_id"},
        )
    service = NotificationService(
        session, VerifiedAppId(snapshot.app_id), snapshot.config, container
    )
    out = await service.handle(verified)
    container.metrics.storekit_notifications.labels(outcome=out.status).inc()
    return out
