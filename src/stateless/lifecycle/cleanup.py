"""Hard-deletes expired rows in paced, bounded batches (the only code that deletes across
tenants, and only expired rows); erases one tenant's rows through the scoped repository base."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import delete, inspect, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.kit.db import utcnow
from stateless.kit.metrics import Metrics
from stateless.kit.tenancy import TenantScopedRepository
from stateless.lifecycle.registry import ExpiringKind, LifecycleRegistry
from stateless.tenants.schemas import TenantContext, VerifiedAppId

log = structlog.get_logger("stateless.cleanup")


@dataclass
class CleanupReport:
    deleted: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


class CleanupService:
    """Expired rows of every tenant (or one) in paced batches; one tenant's rows on request.

    Pacing keeps request writes fast while a large backlog drains: each batch is sized to run
    for about `batch_target_seconds` (halved when slower, doubled when much faster, up to
    `batch_size`), and after each batch the service waits as long again times
    `(1 - duty_cycle) / duty_cycle`, so it holds the database at most that share of the time
    and row locks, WAL writes and I/O come in short bursts that inserts slip between. The
    defaults (10 ms, 30 %) are measured choices: docs/lifecycle.md.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: LifecycleRegistry,
        metrics: Metrics,
        batch_size: int,
        *,
        is_sqlite: bool,
        hook_batch_size: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        batch_target_seconds: float = 0.01,
        duty_cycle: float = 0.3,
        min_batch_size: int = 100,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.registry = registry
        self.metrics = metrics
        self.batch_size = batch_size
        self.hook_batch_size = min(hook_batch_size or batch_size, batch_size)
        self.is_sqlite = is_sqlite
        self.clock = clock
        self.batch_target_seconds = batch_target_seconds
        self.duty_cycle = min(max(duty_cycle, 0.05), 1.0)
        self.min_batch_size = min(min_batch_size, batch_size)

    async def run_once(
        self, app_id: str | None = None, stop: asyncio.Event | None = None
    ) -> CleanupReport:
        """Delete expired rows (of one tenant, or of all). Live rows are never touched here.

        Each batch is its own transaction, so stopping between batches leaves no partial state.
        """
        return await self._run(stop, lambda kind, n: self._expired_batch(kind, app_id, n))

    async def erase_tenant(
        self, tenant: TenantContext | VerifiedAppId, stop: asyncio.Event | None = None
    ) -> CleanupReport:
        """Delete every row of one tenant, live ones included (the "erase my data" request).

        Goes through the scoped repository base (`erase_tenant`), so it takes a verified tenant
        and can reach no other tenant's rows; there is no "every tenant" form.
        """
        app_id = tenant.app_id if isinstance(tenant, TenantContext) else str(tenant)
        if not app_id:
            raise ValueError("erase_tenant needs a tenant")
        return await self._run(stop, lambda kind, n: self._tenant_batch(kind, tenant, app_id, n))

    async def _run(
        self,
        stop: asyncio.Event | None,
        batch: Callable[[ExpiringKind, int], Awaitable[tuple[int, bool]]],
    ) -> CleanupReport:
        report = CleanupReport()
        started = time.perf_counter()
        for kind in self.registry.kinds():
            try:
                report.deleted[kind.kind] = await self._purge_kind(kind, stop, batch)
            except Exception as exc:  # isolation boundary: one kind failing must not stop the rest
                report.errors[kind.kind] = type(exc).__name__
                self.metrics.cleanup_errors.labels(kind=kind.kind).inc()
                log.error(
                    "cleanup_kind_failed",
                    kind=kind.kind,
                    error_type=type(exc).__name__,
                    exc_info=exc,
                )
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
        if self.is_sqlite and any(report.deleted.values()):
            await self._sqlite_checkpoint()
        self.metrics.cleanup_seconds.observe(time.perf_counter() - started)
        return report

    async def _purge_kind(
        self,
        kind: ExpiringKind,
        stop: asyncio.Event | None,
        batch: Callable[[ExpiringKind, int], Awaitable[tuple[int, bool]]],
    ) -> int:
        limit = self.hook_batch_size if kind.before_delete is not None else self.batch_size
        size = min(limit, max(self.min_batch_size, 1000))
        total = 0
        while True:
            started = time.perf_counter()
            deleted, drained = await batch(kind, size)
            elapsed = time.perf_counter() - started
            total += deleted
            if deleted:
                self.metrics.cleanup_deleted.labels(kind=kind.kind).inc(deleted)
            if drained or (stop is not None and stop.is_set()):
                return total
            if elapsed > self.batch_target_seconds:
                size = max(self.min_batch_size, size // 2)
            elif elapsed < self.batch_target_seconds / 2:
                size = min(limit, size * 2)
            # Yield the database for a while: at most `duty_cycle` of the time is cleanup's.
            await asyncio.sleep(elapsed * (1 - self.duty_cycle) / self.duty_cycle)

    async def _expired_batch(
        self, kind: ExpiringKind, app_id: str | None, n: int
    ) -> tuple[int, bool]:
        model: Any = kind.model
        async with self.sessionmaker() as session:
            if kind.before_delete is None:
                result = await self._delete_batch_direct(session, model, app_id, n)
            else:
                conditions = [model.expires_at <= self.clock()]
                if app_id is not None:
                    conditions.append(model.app_id == app_id)
                result = await self._delete_batch_with_rows(session, kind, model, conditions, n)
            await session.commit()
        return result

    async def _tenant_batch(
        self, kind: ExpiringKind, tenant: TenantContext | VerifiedAppId, app_id: str, n: int
    ) -> tuple[int, bool]:
        model: Any = kind.model
        async with self.sessionmaker() as session:
            if kind.before_delete is None:
                repo = TenantScopedRepository.for_model(model)(session, tenant, self.clock)
                deleted = await repo.erase_tenant(app_id, limit=n)
                result = (deleted, deleted < n)
            else:
                result = await self._delete_batch_with_rows(
                    session, kind, model, [model.app_id == app_id], n
                )
            await session.commit()
        return result

    async def _delete_batch_direct(
        self, session: AsyncSession, model: Any, app_id: str | None, n: int
    ) -> tuple[int, bool]:
        """One statement per batch, by physical row id (Postgres ctid, a TID scan; SQLite rowid):
        no rows travel to Python, no primary-key probes, locks held only for the batch, and on
        Postgres SKIP LOCKED so it never waits on a writer. Expired rows only."""
        table = model.__table__.name  # our own metadata, never user input
        now = self.clock()
        # SQLite keeps naive UTC text in SQLAlchemy's format (see UTCDateTime)
        params: dict[str, Any] = {
            "n": n,
            "now": now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if self.is_sqlite else now,
        }
        where = ["expires_at <= :now"]
        if app_id is not None:
            where.append("app_id = :app_id")
            params["app_id"] = app_id
        condition = " AND ".join(where)
        if self.is_sqlite:
            sql = (
                f"DELETE FROM {table} WHERE rowid IN ("  # noqa: S608 - table from metadata
                f"SELECT rowid FROM {table} WHERE {condition} LIMIT :n)"
            )
        else:
            sql = (
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608 - table from metadata
                f"SELECT ctid FROM {table} WHERE {condition} LIMIT :n FOR UPDATE SKIP LOCKED))"
            )
        result = await session.execute(text(sql), params)
        deleted = int(getattr(result, "rowcount", 0) or 0)
        return deleted, deleted < n

    async def _delete_batch_with_rows(
        self,
        session: AsyncSession,
        kind: ExpiringKind,
        model: Any,
        conditions: list[Any],
        n: int,
    ) -> tuple[int, bool]:
        """Load one batch, run the kind's hook on it (bodies before rows), then delete it."""
        pk_columns = list(inspect(model).primary_key)
        stmt = select(model).where(*conditions).limit(n)
        if not self.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        rows = (await session.scalars(stmt)).all()
        if not rows:
            return 0, True
        if kind.before_delete is not None:
            await kind.before_delete(rows)
        keys = [tuple(getattr(row, col.key) for col in pk_columns) for row in rows]
        result = await session.execute(
            delete(model)
            .where(tuple_(*pk_columns).in_(keys))
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0), len(rows) < n

    async def _sqlite_checkpoint(self) -> None:
        """Fold the WAL into the main file and truncate it, so erased pages leave no copy behind."""
        async with self.sessionmaker() as session:
            await session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
