"""Erasure on request (pk or sk): what an app calls when its user deletes their account."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.container import Container
from stateless.deps import API_V1, KeyedService, api_router
from stateless.kit.data.context import TenantContext
from stateless.subjects.schemas import EraseSubjectIn, EraseSubjectOut
from stateless.subjects.service import SubjectErasureService

router = api_router(f"{API_V1}/subjects", ["subjects"])


def _build(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> SubjectErasureService:
    return SubjectErasureService(
        session, tenant, container.privacy, container.lifecycle, container.receipts
    )


Service = Annotated[SubjectErasureService, Depends(KeyedService(_build, "any"))]


@router.post(
    "/erase", name="subjects.erase", summary="Erase one user's data", response_model=EraseSubjectOut
)
async def erase_subject(body: EraseSubjectIn, service: Service) -> EraseSubjectOut:
    """Erase one user's data now: every row of this app keyed by the identifiers you send
    (device tokens by `device_ids`, Web Push subscriptions by `subscriber_ids`, purchase
    records by `app_account_token`), live or expired, in one transaction.

    Call it from your app's "delete my account" flow (App Store guideline 5.1.1(v)) with the
    publishable key: knowing the random identifiers is the authority. Send at least one
    identifier; each list holds at most 100 ids. Unknown identifiers erase nothing and answer
    the same shape (every kind listed, with 0), so calling it again is safe.

    `receipt` is a compact JWS (EdDSA) over `{"iss", "app_id", "iat", "scope": "subject",
    "erased", "jti"}`, verifiable with any JOSE library against `/.well-known/jwks.json`;
    it names no identifier, so you may keep it as proof of the erasure.
    """
    erasure = await service.erase(body.identifiers())
    return EraseSubjectOut(erased=erasure.erased, receipt=erasure.receipt)
