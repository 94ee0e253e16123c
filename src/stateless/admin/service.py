"""What the admin endpoints report and do for one app: its data, its erasure, and this
replica's health as the app sees it."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from stateless import __version__
from stateless.config import Settings
from stateless.health.checks import dependency_checks
from stateless.kit.context import TenantContext
from stateless.kit.tenancy import TenantScopedRepository
from stateless.lifecycle.cleanup import CleanupReport, CleanupService
from stateless.lifecycle.registry import LifecycleRegistry
from stateless.lifecycle.state import BackgroundState


class AdminService:
    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        *,
        settings: Settings,
        engine: AsyncEngine,
        redis: Redis | None,
        lifecycle: LifecycleRegistry,
        cleanup: CleanupService,
        background: BackgroundState,
    ) -> None:
        self.session = session
        self.tenant = tenant
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self.lifecycle = lifecycle
        self.cleanup = cleanup
        self.background = background

    async def cleanup_now(self) -> CleanupReport:
        """This app's expired rows, deleted now."""
        return await self.cleanup.run_once(app_id=self.tenant.app_id)

    async def erase(self) -> CleanupReport:
        """All of this app's end-user data (files included), deleted now."""
        return await self.cleanup.run_once(app_id=self.tenant.app_id, everything=True)

    async def live_counts(self) -> dict[str, int]:
        items = {}
        for kind in self.lifecycle.kinds():
            repo = TenantScopedRepository.for_model(kind.model)(self.session, self.tenant)
            items[kind.kind] = await repo.count()
        return items

    def scheduler(self) -> tuple[str, dict[str, Any]]:
        """This replica's cleanup scheduler: `disabled` where no background jobs run."""
        state = self.background.cleanup
        if not self.background.enabled:
            status = "disabled"  # RUN_BACKGROUND_JOBS=false
        elif state.is_running and state.last_run_status in (None, "success"):
            status = "healthy"
        else:
            status = "degraded"
        return status, state.as_dict()

    async def health(self) -> dict[str, Any]:
        checks = await dependency_checks(self.engine, self.redis, self.settings.db_pool_timeout + 1)
        if self.redis is None:
            checks["rate_limits"] = "in-process"
        scheduler_status, state = self.scheduler()
        checks["scheduler"] = scheduler_status
        ok = all(v in ("ok", "in-process", "healthy", "disabled") for v in checks.values())
        return {
            "status": "ok" if ok else "degraded",
            "version": __version__,
            "tenant": self.tenant.app_id,
            "checks": checks,
            "scheduler": state,
        }
