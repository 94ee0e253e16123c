"""Admin endpoints (secret key): what this app keeps, for how long, how far its deletion lags,
and erasing it now."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.admin.service import AdminService
from stateless.container import Container
from stateless.deps import API_V1, KeyedService, api_router
from stateless.kit.data.context import TenantContext
from stateless.kit.wire.timestamps import Timestamp
from stateless.lifecycle.wiring import cleanup_service

router = api_router(f"{API_V1}/admin", ["admin"])


class CleanupOut(BaseModel):
    status: str
    deleted: dict[str, int]
    tenant: str


class EraseDataOut(CleanupOut):
    receipt: str | None = Field(
        description="Deletion receipt (compact JWS, EdDSA, keys at /.well-known/jwks.json) "
        "with scope `tenant`; null when the status is `partial` (retry the erasure)."
    )


class KindRetentionOut(BaseModel):
    live: int = Field(description="Rows not yet expired.")
    expired_awaiting_erasure: int = Field(
        description="Rows past their expiry (invisible already) that cleanup has not deleted yet."
    )
    oldest_expired_age_seconds: int = Field(
        description="How long the oldest of those has waited for deletion; 0 when none."
    )
    max_ttl_seconds: int = Field(description="The longest any row of this kind may live.")
    erased_last_24h: int = Field(
        description="Rows deleted by cleanup or by an erasure request in the current UTC hour "
        "and the 23 before it."
    )


class RetentionOut(BaseModel):
    tenant: str
    measured_at: Timestamp
    cleanup_interval_seconds: float
    kinds: dict[str, KindRetentionOut]


class StatsOut(BaseModel):
    tenant: str
    items: dict[str, int]


class SchedulerOut(BaseModel):
    is_running: bool
    last_run_time: Timestamp | None
    last_run_status: str | None
    run_count: int
    error_count: int
    started_at: Timestamp | None
    next_run: Timestamp | None
    is_leader: bool


class SchedulerHealthOut(BaseModel):
    status: str
    scheduler: SchedulerOut


class HealthDetailedOut(BaseModel):
    status: str
    version: str
    tenant: str
    checks: dict[str, str]
    scheduler: SchedulerOut


class InventoryItem(BaseModel):
    kind: str
    description: str
    stored_as: str
    default_ttl_seconds: int
    max_ttl_seconds: int


class InventoryOut(BaseModel):
    tenant: str
    max_data_ttl_days: int
    cleanup_interval_seconds: float
    kinds: list[InventoryItem]


def _build(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> AdminService:
    return AdminService(
        session,
        tenant,
        settings=container.settings,
        engine=container.engine,
        redis=container.redis,
        lifecycle=container.lifecycle,
        cleanup=cleanup_service(container),
        background=container.background,
        receipts=container.receipts,
    )


Service = Annotated[AdminService, Depends(KeyedService(_build, "secret"))]


@router.post(
    "/cleanup",
    name="admin.cleanup",
    summary="Delete this app's expired rows now",
    response_model=CleanupOut,
)
async def cleanup_now(service: Service) -> CleanupOut:
    """Delete this app's expired rows now instead of waiting for the next background run."""
    report = await service.cleanup_now()
    return CleanupOut(
        status="success" if report.ok else "partial",
        deleted=report.deleted,
        tenant=service.tenant.app_id,
    )


@router.get(
    "/stats", name="admin.stats", summary="Count live items per kind", response_model=StatsOut
)
async def stats(service: Service) -> StatsOut:
    """Live (unexpired) items per kind for this app."""
    return StatsOut(tenant=service.tenant.app_id, items=await service.live_counts())


@router.get(
    "/scheduler-health",
    name="admin.scheduler_health",
    summary="Show the cleanup scheduler's state",
    response_model=SchedulerHealthOut,
)
async def scheduler_health(service: Service) -> dict[str, Any]:
    """State of this replica's cleanup scheduler (`disabled` on web-only replicas)."""
    status, state = service.scheduler()
    return {"status": status, "scheduler": state}


@router.get(
    "/health-detailed",
    name="admin.health_detailed",
    summary="Show dependency health",
    response_model=HealthDetailedOut,
)
async def health_detailed(service: Service) -> dict[str, Any]:
    """Database, Redis and scheduler state as this replica sees them."""
    return await service.health()


@router.delete(
    "/data",
    name="admin.erase_data",
    summary="Erase all of this app's data",
    response_model=EraseDataOut,
)
async def erase_data(service: Service) -> EraseDataOut:
    """Erase all of this app's end-user data now (files included). Keys and settings stay.

    `receipt` is a compact JWS (EdDSA) over `{"iss", "app_id", "iat", "scope": "tenant",
    "erased", "jti"}`, verifiable with any JOSE library against `/.well-known/jwks.json`.
    """
    report, receipt = await service.erase()
    return EraseDataOut(
        status="erased" if report.ok else "partial",
        deleted=report.deleted,
        tenant=service.tenant.app_id,
        receipt=receipt,
    )


@router.get(
    "/retention",
    name="admin.retention",
    summary="Show how far deletion lags",
    response_model=RetentionOut,
)
async def retention(service: Service) -> RetentionOut:
    """How far deletion lags for this app, per kind: live rows, expired rows awaiting erasure
    and how long the oldest has waited, the kind's maximum lifetime, and rows erased in the
    last 24 hours. An `oldest_expired_age_seconds` above twice `cleanup_interval_seconds`
    means cleanup is falling behind (the operator's alert fires on the same figure)."""
    figures = await service.retention()
    return RetentionOut(
        tenant=service.tenant.app_id,
        measured_at=figures.measured_at,
        cleanup_interval_seconds=service.settings.cleanup_interval_seconds,
        kinds={kind: KindRetentionOut(**asdict(f)) for kind, f in figures.kinds.items()},
    )


@router.get(
    "/data-inventory",
    name="admin.data_inventory",
    summary="List what data is kept and for how long",
    response_model=InventoryOut,
)
async def data_inventory(service: Service) -> InventoryOut:
    """Every kind of data kept for this app, in what form, and for how long."""
    settings = service.settings
    return InventoryOut(
        tenant=service.tenant.app_id,
        max_data_ttl_days=settings.max_data_ttl_days,
        cleanup_interval_seconds=settings.cleanup_interval_seconds,
        kinds=[
            InventoryItem(
                kind=rule.kind,
                description=rule.description,
                stored_as=rule.stored_as,
                default_ttl_seconds=rule.default_seconds,
                max_ttl_seconds=rule.max_seconds,
            )
            for rule in service.lifecycle.policy.rules()
        ],
    )
