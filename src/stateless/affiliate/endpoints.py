"""Affiliate API: mint referral codes (pk or sk), record conversions and read stats (sk)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.affiliate.schemas import (
    ConversionIn,
    ConversionOut,
    GenerateIn,
    GenerateOut,
    StatsOut,
)
from stateless.affiliate.service import (
    AffiliateService,
    CurrencyRequired,
    DateRangeTooLong,
    InvalidCode,
    InvalidCodeId,
    InvalidCurrency,
    InvalidDateRange,
    InvalidEvent,
    InvalidEventId,
    InvalidValue,
    NegativeValue,
    TooManyDecimals,
    ValueRequired,
    ValueTooLarge,
)
from stateless.affiliate.wiring import affiliate_service
from stateless.container import Container
from stateless.deps import API_V1, KeyedService, api_router
from stateless.kit.data.context import TenantContext
from stateless.kit.web.openapi import problems
from stateless.kit.wire.bounds import BoundedDate

router = api_router(f"{API_V1}/affiliate", ["affiliate"])


def _build(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> AffiliateService:
    return affiliate_service(container, session, tenant)


# One service dependency per key scope, so a request authenticates (and is rate limited) once.
AnyKeyService = Annotated[AffiliateService, Depends(KeyedService(_build, "any"))]
SecretKeyService = Annotated[AffiliateService, Depends(KeyedService(_build, "secret"))]


@router.post(
    "/generate",
    name="affiliate.generate",
    summary="Generate a referral code",
    response_model=GenerateOut,
    responses=problems(InvalidCodeId),
)
async def generate_code(body: GenerateIn, service: AnyKeyService) -> GenerateOut:
    """The referral code for `code_id`: always the same code for the same app and code_id.

    Nothing is stored. The code carries a MAC, so /conversion can tell a genuine code of this
    app from a typo or a guess without knowing code_id.
    """
    return GenerateOut(code=service.generate_code(body.code_id), tenant=service.tenant.app_id)


@router.post(
    "/conversion",
    name="affiliate.conversion",
    summary="Record a referral conversion",
    response_model=ConversionOut,
    responses=problems(
        InvalidCode,
        InvalidCodeId,
        InvalidEvent,
        InvalidEventId,
        CurrencyRequired,
        InvalidCurrency,
        ValueRequired,
        InvalidValue,
        NegativeValue,
        ValueTooLarge,
        TooManyDecimals,
    ),
)
async def record_conversion(body: ConversionIn, service: SecretKeyService) -> ConversionOut:
    """Count one conversion of a code into today's (UTC) aggregate. Secret key only.

    A forged or another app's code answers 400 `invalid_code`. With `event_id`, a repeat
    answers `duplicate` and is not counted again.
    """
    status = await service.record_conversion(
        body.code,
        event=body.event,
        value=body.value,
        currency=body.currency,
        event_id=body.event_id,
        code_id=body.code_id,
    )
    return ConversionOut(status=status)


@router.get(
    "/stats",
    name="affiliate.stats",
    summary="Referral conversion figures per day",
    response_model=StatsOut,
    responses=problems(InvalidDateRange, DateRangeTooLong),
)
async def conversion_stats(
    service: SecretKeyService,
    code: Annotated[
        str | None, Query(max_length=64, description="One code; all of this app's when omitted.")
    ] = None,
    since: Annotated[
        BoundedDate | None,
        Query(description="First UTC day (YYYY-MM-DD); default until - 89 days."),
    ] = None,
    until: Annotated[
        BoundedDate | None,
        Query(description="Last UTC day, inclusive (YYYY-MM-DD); default today."),
    ] = None,
) -> StatsOut:
    """Per-day conversion counts and exact value sums, with totals per event and currency.

    The window is inclusive and at most 366 days; expired aggregates (older than 90 days) are
    never counted. Secret key only.
    """
    return await service.stats(code, since, until)
