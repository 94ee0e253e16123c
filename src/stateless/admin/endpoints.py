"""Admin endpoints (secret key): what this app keeps, for how long, and erasing it now."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from stateless import __version__
from stateless.deps import API_V1, ContainerDep, SessionDep
from stateless.kit.tenancy import TenantScopedRepository
from stateless.kit.timestamps import Timestamp
from stateless.lifecycle.registry import LifecycleRegistry
from stateless.lifecycle.scheduler import SchedulerState, cleanup_service
from stateless.tenants.auth import SecretKeyTenant

router = APIRouter(prefix=f"{API_V1}/admin", tags=["admin"])


class CleanupOut(BaseModel):
    status: str
    deleted: dict[str, int]
    tenant: str


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


def _registry(container: ContainerDep) -> LifecycleRegistry:
    registry: LifecycleRegistry = container.services["lifecycle"]
    return registry


def _scheduler_state(container: ContainerDep) -> tuple[str, dict[str, Any]]:
    scheduler = container.services.get("scheduler")
    state: SchedulerState = scheduler.state if scheduler is not None else SchedulerState()
    if scheduler is None:
        status = "disabled"  # this replica runs no background jobs (RUN_BACKGROUND_JOBS=false)
    elif state.is_running and state.last_run_status in (None, "success"):
        status = "healthy"
    else:
        status = "degraded"
    return status, state.as_dict()


@router.post("/cleanup", name="admin.cleanup", response_model=CleanupOut)
async def cleanup_now(tenant: SecretKeyTenant, container: ContainerDep) -> CleanupOut:
    """Delete this app's expired rows now instead of waiting for the next background run."""
    report = await cleanup_service(container).run_once(app_id=tenant.app_id)
    return CleanupOut(
        status="success" if report.ok else "partial", deleted=report.deleted, tenant=tenant.app_id
    )


@router.get("/stats", name="admin.stats", response_model=StatsOut)
async def stats(tenant: SecretKeyTenant, session: SessionDep, container: ContainerDep) -> StatsOut:
    """Live (unexpired) items per kind for this app."""
    items = {}
    for kind in _registry(container).kinds():
        repo = TenantScopedRepository.for_model(kind.model)(session, tenant)
        items[kind.kind] = await repo.count()
    return StatsOut(tenant=tenant.app_id, items=items)


@router.get("/scheduler-health", name="admin.scheduler_health", response_model=SchedulerHealthOut)
async def scheduler_health(tenant: SecretKeyTenant, container: ContainerDep) -> dict[str, Any]:
    """State of this replica's cleanup scheduler (`disabled` on web-only replicas)."""
    status, state = _scheduler_state(container)
    return {"status": status, "scheduler": state}


@router.get("/health-detailed", name="admin.health_detailed", response_model=HealthDetailedOut)
async def health_detailed(tenant: SecretKeyTenant, container: ContainerDep) -> dict[str, Any]:
    """Database, Redis and scheduler state as this replica sees them."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(container.settings.db_pool_timeout + 1):
            async with container.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # reported, not raised
        checks["database"] = "unavailable"
    if container.redis is not None:
        try:
            async with asyncio.timeout(1):
                await container.redis.ping()
            checks["redis"] = "ok"
        except Exception:  # reported, not raised
            checks["redis"] = "unavailable"
    else:
        checks["rate_limits"] = "in-process"
    scheduler_status, state = _scheduler_state(container)
    checks["scheduler"] = scheduler_status
    ok = all(v in ("ok", "in-process", "healthy", "disabled") for v in checks.values())
    return {
        "status": "ok" if ok else "degraded",
        "version": __version__,
        "tenant": tenant.app_id,
        "checks": checks,
        "scheduler": state,
    }


@router.delete("/data", name="admin.erase_data", response_model=CleanupOut)
async def erase_data(tenant: SecretKeyTenant, container: ContainerDep) -> CleanupOut:
    """Erase all of this app's end-user data now (files included). Keys and settings stay."""
    report = await cleanup_service(container).run_once(app_id=tenant.app_id, everything=True)
    return CleanupOut(
        status="erased" if report.ok else "partial", deleted=report.deleted, tenant=tenant.app_id
    )


@router.get("/data-inventory", name="admin.data_inventory", response_model=InventoryOut)
async def data_inventory(tenant: SecretKeyTenant, container: ContainerDep) -> InventoryOut:
    """Every kind of data kept for this app, in what form, and for how long."""
    policy = _registry(container).policy
    return InventoryOut(
        tenant=tenant.app_id,
        max_data_ttl_days=container.settings.max_data_ttl_days,
        cleanup_interval_seconds=container.settings.cleanup_interval_seconds,
        kinds=[
            InventoryItem(
                kind=rule.kind,
                description=rule.description,
                stored_as=rule.stored_as,
                default_ttl_seconds=rule.default_seconds,
                max_ttl_seconds=rule.max_seconds,
            )
            for rule in policy.rules()
        ],
    )
