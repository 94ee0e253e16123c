"""Hard-deletes expired rows in bounded batches; the only code allowed to touch rows unscoped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import delete, inspect, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.kit.db import utcnow
from stateless.kit.metrics import Metrics
from stateless.lifecycle.registry import ExpiringKind, LifecycleRegistry

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
    ) -> None:
        self.sessionmaker = sessionmaker
        self.registry = registry
        self.metrics = metrics
        self.batch_size = batch_size
        self.hook_batch_size = min(hook_batch_size or batch_size, batch_size)
        self.is_sqlite = is_sqlite
        self.clock = clock

    async def run_once(
        self,
        app_id: str | None = None,
        stop: asyncio.Event | None = None,
        *,
        everything: bool = False,
    ) -> CleanupReport:
        """Delete expired rows (of one tenant, or all); with `everything`, the tenant's live rows too.

        Each batch is its own transaction, so stopping between batches leaves no partial state.
        """
        report = CleanupReport()
        started = time.perf_counter()
        for kind in self.registry.kinds():
            try:
                report.deleted[kind.kind] = await self._purge_kind(
                    kind, app_id, stop, everything=everything
                )
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
        app_id: str | None,
        stop: asyncio.Event | None,
        *,
        everything: bool,
    ) -> int:
        model: Any = kind.model
        pk_columns = list(inspect(model).primary_key)
        total = 0
        while True:
            async with self.sessionmaker() as session:
                conditions = []
                if not everything:
                    conditions.append(model.expires_at <= self.clock())
                if app_id is not None:
                    conditions.append(model.app_id == app_id)
                if kind.before_delete is None:
                    deleted, drained = await self._delete_batch_direct(
                        session, model, app_id, everything=everything
                    )
                else:
                    deleted, drained = await self._delete_batch_with_rows(
                        session, kind, model, pk_columns, conditions
                    )
                await session.commit()
            total += deleted
            if deleted:
                self.metrics.cleanup_deleted.labels(kind=kind.kind).inc(deleted)
            if drained or (stop is not None and stop.is_set()):
                return total
            await asyncio.sleep(0)  # let requests in between batches

    async def _delete_batch_direct(
        self, session: AsyncSession, model: Any, app_id: str | None, *, everything: bool
    ) -> tuple[int, bool]:
        """One statement per batch, by physical row id (Postgres ctid, a TID scan; SQLite rowid):
        no rows travel to Python, no primary-key probes, locks held only for the batch, and on
        Postgres SKIP LOCKED so it never waits on a writer."""
        table = model.__table__.name  # our own metadata, never user input
        where = ["1 = 1"]
        params: dict[str, Any] = {"n": self.batch_size}
        if not everything:
            where.append("expires_at <= :now")
            now = self.clock()
            # SQLite keeps naive UTC text in SQLAlchemy's format (see UTCDateTime)
            params["now"] = (
                now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if self.is_sqlite else now
            )
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
        stmt = text(sql)
        result = await session.execute(stmt, params)
        deleted = int(getattr(result, "rowcount", 0) or 0)
        return deleted, deleted < self.batch_size

    async def _delete_batch_with_rows(
        self,
        session: AsyncSession,
        kind: ExpiringKind,
        model: Any,
        pk_columns: list[Any],
        conditions: list[Any],
    ) -> tuple[int, bool]:
        """Load one batch, run the kind's hook on it (bodies before rows), then delete it."""
        limit = self.hook_batch_size if kind.before_delete is not None else self.batch_size
        stmt = select(model).where(*conditions).limit(limit)
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
        return int(getattr(result, "rowcount", 0) or 0), len(rows) < limit

    async def _sqlite_checkpoint(self) -> None:
        """Fold the WAL into the main file and truncate it, so erased pages leave no copy behind."""
        async with self.sessionmaker() as session:
            await session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
