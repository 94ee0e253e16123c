"""Erasure counters: one upsert adds a batch's counts to its hour's bucket; the live buckets of
one app sum to its rows erased in the last 24 hours."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.kit.data.tenancy import TenantScopedRepository
from stateless.lifecycle.models import ErasureCount

# A bucket counts for the 24 hours after its hour began, then expires (and cleanup deletes it).
BUCKET_LIFETIME = timedelta(hours=24)

_TABLE: Any = ErasureCount.__table__


def _upsert(dialect: Any) -> Any:
    names = ("app_id", "kind", "hour", "erased", "created_at", "expires_at")
    stmt = dialect.insert(_TABLE).values({name: bindparam(name) for name in names})
    return stmt.on_conflict_do_update(
        index_elements=[_TABLE.c.app_id, _TABLE.c.kind, _TABLE.c.hour],
        set_={"erased": _TABLE.c.erased + stmt.excluded.erased},
    )


_UPSERT = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}


def hour_of(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


async def add_erasure_counts(
    session: AsyncSession, counts: Mapping[tuple[str, str], int], now: datetime
) -> None:
    """Add `{(app_id, kind): rows}` to the current hour's buckets, in the session's transaction.

    Called by the cleanup service (the rows of many apps in one batch) and, through
    `ErasureCountRepository`, for one app's erasure request; zero counts are skipped.
    """
    hour = hour_of(now)
    rows = [
        {
            "app_id": app_id,
            "kind": kind,
            "hour": hour,
            "erased": count,
            "created_at": now,
            "expires_at": hour + BUCKET_LIFETIME,
        }
        for (app_id, kind), count in sorted(counts.items())
        if count > 0
    ]
    if rows:
        await session.execute(_UPSERT[session.get_bind().dialect.name], rows)


class ErasureCountRepository(TenantScopedRepository[ErasureCount]):
    model = ErasureCount

    async def record(self, erased: Mapping[str, int]) -> None:
        """Count one erasure of this app's rows (per kind) in the current hour."""
        counts = {(self.app_id, kind): count for kind, count in erased.items()}
        await add_erasure_counts(self.session, counts, self.clock())

    async def last_24h(self) -> dict[str, int]:
        """Rows erased per kind in the current UTC hour and the 23 before it (live buckets)."""
        stmt = (
            select(_TABLE.c.kind, func.sum(_TABLE.c.erased))
            .where(*self._live())
            .group_by(_TABLE.c.kind)
        )
        rows = (await self.session.execute(stmt)).all()
        return {str(kind): int(total or 0) for kind, total in rows}
