"""Background reconciliation (leader only): every ENTITLEMENT_RECONCILE_SECONDS, each app with
App Store Server API credentials is reconciled in its own short transaction; one app's failure
is logged and counted, and the others go on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.kit.data.context import TenantContext, VerifiedAppId
from stateless.kit.data.db import session_scope
from stateless.kit.observe.metrics import Metrics
from stateless.kit.runtime.background import Job
from stateless.tenants.directory import TenantDirectory
from stateless.tenants.models import Tenant

log = structlog.get_logger("stateless.entitlements")

ReconcileOne = Callable[[AsyncSession, TenantContext], Awaitable[Any]]
FIRST_DELAY_SECONDS = 30.0


class ReconcileJob:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        directory: TenantDirectory,
        reconcile_one: ReconcileOne,
        metrics: Metrics,
        interval_seconds: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.directory = directory
        self.reconcile_one = reconcile_one
        self.metrics = metrics
        self.interval_seconds = interval_seconds

    async def _app_ids(self) -> list[str]:
        async with session_scope(self.sessionmaker) as session:
            return list(
                (await session.scalars(select(Tenant.app_id).order_by(Tenant.app_id))).all()
            )

    async def run(self, stop: asyncio.Event) -> bool:
        for app_id in await self._app_ids():
            if stop.is_set():
                break
            snapshot = await self.directory.get(app_id)
            if snapshot is None or not snapshot.config.appstore_key_id:
                continue
            tenant = TenantContext(
                app_id=VerifiedAppId(snapshot.app_id),
                scope="secret",
                key_id="reconcile",
                config=snapshot.config,
                secrets_sealed=snapshot.secrets_sealed,
            )
            try:
                async with session_scope(self.sessionmaker) as session:
                    report = await self.reconcile_one(session, tenant)
                log.info("entitlement_reconcile", status=getattr(report, "status", None))
            except Exception as exc:  # isolation boundary: one app's failure, counted
                self.metrics.background_failures.labels(job="entitlement-reconcile").inc()
                log.warning("entitlement_reconcile_failed", error=type(exc).__name__)
        return False

    def job(self) -> Job:
        return Job(
            "entitlement-reconcile",
            self.run,
            interval_seconds=self.interval_seconds,
            first_delay_seconds=min(FIRST_DELAY_SECONDS, self.interval_seconds),
            leader_only=True,
        )
