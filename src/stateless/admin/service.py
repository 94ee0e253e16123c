"""What the admin endpoints report and do for one app: its data, its erasure (with a signed
receipt), how far its deletion lags, and this replica's health as the app sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from stateless import __version__
from stateless.config import Settings
from stateless.health.checks import dependency_checks
from stateless.kit.crypto.receipts import DeletionReceipts
from stateless.kit.data.context import TenantContext
from stateless.kit.data.db import utcnow
from stateless.kit.data.tenancy import TenantScopedRepository
from stateless.lifecycle.cleanup import Backlog, CleanupReport, CleanupService
from stateless.lifecycle.registry import LifecycleRegistry
from stateless.lifecycle.repository import ErasureCountRepository
from stateless.lifecycle.state import BackgroundState


@dataclass(frozen=True, slots=True)
class KindRetention:
    live: int
    expired_awaiting_erasure: int
    oldest_expired_age_seconds: int
    max_ttl_seconds: int
    erased_last_24h: int


@dataclass(frozen=True, slots=True)
class Retention:
    measured_at: datetime
    kinds: dict[str, KindRetention]


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
        receipts: DeletionReceipts,
    ) -> None:
        self.session = session
        self.tenant = tenant
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self.lifecycle = lifecycle
        self.cleanup = cleanup
        self.background = background
        self.receipts = receipts

    async def cleanup_now(self) -> CleanupReport:
        """This app's expired rows, deleted now."""
        return await self.cleanup.run_once(app_id=self.tenant.app_id)

    async def erase(self) -> tuple[CleanupReport, str | None]:
        """All of this app's end-user data (files included), deleted now, and a signed receipt
        for it (None when some kind failed: the erasure is not complete, retry it)."""
        report = await self.cleanup.erase_tenant(self.tenant)
        if not report.ok:
            return report, None
        return report, self.receipts.sign(self.tenant.app_id, "tenant", report.deleted)

    async def retention(self) -> Retention:
        """Per kind: live rows, expired rows not yet erased and the oldest one's wait, the
        kind's maximum lifetime, and rows erased in the last 24 hours (index lookups only)."""
        now = utcnow()

        def clock() -> datetime:
            return now  # one instant for every figure: live and expired partition the rows

        erased = await ErasureCountRepository(self.session, self.tenant, clock).last_24h()
        figures = {}
        for kind in self.lifecycle.kinds():
            repo = TenantScopedRepository.for_model(kind.model)(self.session, self.tenant, clock)
            count, oldest = await repo.expired_backlog()
            backlog = Backlog.measured(count, oldest, now)
            figures[kind.kind] = KindRetention(
                live=await repo.count(),
                expired_awaiting_erasure=backlog.expired_rows,
                oldest_expired_age_seconds=backlog.oldest_age_seconds,
                max_ttl_seconds=self.lifecycle.policy.rule(kind.kind).max_seconds,
                erased_last_24h=erased.get(kind.kind, 0),
            )
        return Retention(now, figures)

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
