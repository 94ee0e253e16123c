"""Queries on task and idempotency records.

`BotTaskRepository` and `IdempotencyRepository` are tenant-scoped like every other repository.
`TaskQueue` is the worker's claim across tenants (like cleanup, it must see every tenant): it
only claims live, async tasks and hands each one to a tenant-scoped run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.bots.models import BotIdempotencyRecord, BotTask
from stateless.kit.data.tenancy import TenantScopedRepository, scoped_insert

_TASK_INSERT = scoped_insert(insert(BotTask.__table__))  # type: ignore[arg-type]


class BotTaskRepository(TenantScopedRepository[BotTask]):
    model = BotTask

    async def insert(self, values: dict[str, Any]) -> None:
        """One INSERT (in autocommit unless a transaction is open): queueing is a hot path."""
        await self.run_write(_TASK_INSERT, values)

    async def by_id(self, task_id: str) -> BotTask | None:
        return await self.first(BotTask.task_id == task_id)

    async def finish(
        self,
        task_id: str,
        values: dict[str, Any],
        attempts: int | None = None,
        status: str | None = None,
    ) -> int:
        """Write an outcome; with `attempts`, only if no other worker re-claimed the task since;
        with `status`, only while the task still has that status (not cancelled meanwhile)."""
        where = [BotTask.task_id == task_id]
        if attempts is not None:
            where.append(BotTask.attempts == attempts)
        if status is not None:
            where.append(BotTask.status == status)
        return await self.update_where(values, *where)


class IdempotencyRepository(TenantScopedRepository[BotIdempotencyRecord]):
    model = BotIdempotencyRecord

    async def by_key(self, key_hash: str) -> BotIdempotencyRecord | None:
        return await self.first(BotIdempotencyRecord.key_hash == key_hash)

    async def drop_expired(self, key_hash: str) -> None:
        """An expired record of this key may still await cleanup; it must not block a new one."""
        await self.purge_expired(BotIdempotencyRecord.key_hash == key_hash)

    async def release(self, key_hash: str) -> None:
        await self.delete_where(
            BotIdempotencyRecord.key_hash == key_hash, BotIdempotencyRecord.state == "pending"
        )


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    app_id: str
    task_id: str
    task_type: str
    context_sealed: str | None
    base_url: str | None
    attempts: int
    progress_json: str | None = None


def _claimable(now: datetime) -> Any:
    return and_(
        BotTask.expires_at > now,
        BotTask.mode == "async",
        or_(
            and_(BotTask.status == "queued", BotTask.next_attempt_at <= now),
            and_(BotTask.status == "running", BotTask.lease_expires_at < now),
        ),
    )


class TaskQueue:
    """Durable queue over bot_tasks: FOR UPDATE SKIP LOCKED on Postgres, guarded UPDATEs on SQLite."""

    def __init__(self, session: AsyncSession, *, is_postgres: bool) -> None:
        self.session = session
        self.is_postgres = is_postgres

    async def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[ClaimedTask]:
        stmt = (
            select(BotTask.app_id, BotTask.task_id)
            .where(_claimable(now))
            .order_by(BotTask.next_attempt_at)
            .limit(limit)
        )
        if self.is_postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        candidates = (await self.session.execute(stmt)).all()
        claimed: list[ClaimedTask] = []
        for app_id, task_id in candidates:
            # The guard repeats the claim condition: on SQLite a concurrent claimer loses here.
            result = await self.session.execute(
                update(BotTask)
                .where(BotTask.app_id == app_id, BotTask.task_id == task_id, _claimable(now))
                .values(
                    status="running",
                    attempts=BotTask.attempts + 1,
                    lease_expires_at=lease_until,
                    started_at=now,
                )
                .returning(
                    BotTask.task_type,
                    BotTask.context_sealed,
                    BotTask.base_url,
                    BotTask.attempts,
                    BotTask.progress_json,
                )
                .execution_options(synchronize_session=False)
            )
            row = result.first()
            if row is not None:
                claimed.append(ClaimedTask(app_id, task_id, row[0], row[1], row[2], row[3], row[4]))
        return claimed

    async def fail_abandoned_sync(self, now: datetime) -> int:
        """A sync task whose process died cannot be re-run (its context was never stored)."""
        result = await self.session.execute(
            update(BotTask)
            .where(
                BotTask.expires_at > now,
                BotTask.mode == "sync",
                BotTask.status == "running",
                BotTask.lease_expires_at < now,
            )
            .values(
                status="failed",
                error_code="interrupted",
                error_detail="the process running this task stopped before it finished",
                finished_at=now,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class LiveRows(TenantScopedRepository[Any]):
    """Any registered tenant-owned model, read live and tenant-scoped (exports and reports)."""

    def __init__(self, session: AsyncSession, tenant: Any, model: type[Any]) -> None:
        super().__init__(session, tenant)
        self.model = model

    async def grouped(
        self, keys: list[Any], measures: list[Any], *where: Any
    ) -> list[tuple[Any, ...]]:
        """GROUP BY `keys` over this tenant's live rows: aggregation stays in SQL."""
        stmt = select(*keys, *measures).where(*self._live(), *where).group_by(*keys).order_by(*keys)
        return [tuple(row) for row in (await self.session.execute(stmt)).all()]
