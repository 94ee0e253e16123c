"""Aggregate and de-duplication queries: atomic upserts that add, and per-day sums in SQL.

Both upserts are single INSERT ... ON CONFLICT statements (Postgres and SQLite alike), so
concurrent conversions of the same aggregate or the same event_id are counted exactly once each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Table, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from stateless.affiliate.models import AffiliateAggregate, AffiliateEventMark
from stateless.kit.data.tenancy import TenantScopedRepository


class SumOverflowError(ArithmeticError):
    """SQLite turned an aggregate's integer sum into a float (past 2**63 minor units)."""


@dataclass(frozen=True, slots=True)
class AggregateRow:
    event: str
    currency: str
    conversions: int
    value_sum_minor: int
    day: date | None = None


def _insert(dialect: str, table: Table) -> Any:
    """The dialect's INSERT, which has on_conflict_do_update (both share its signature)."""
    return pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)


def _as_int(value: object) -> int:
    if isinstance(value, float):
        raise SumOverflowError("aggregate sum left the exact integer range")
    if isinstance(value, int | Decimal):
        return int(value)
    return int(str(value))


class AggregateRepository(TenantScopedRepository[AffiliateAggregate]):
    model = AffiliateAggregate

    async def add_conversion(
        self,
        *,
        code: str,
        day: date,
        event: str,
        currency: str,
        value_minor: int,
        expires_at: datetime,
    ) -> int:
        """Add one conversion to its aggregate (created on first use); returns the new sum.

        An aggregate's expiry is fixed when it is created; a row that already expired but was
        not yet deleted is restarted instead of being added to, so expired counts never return.
        """
        now = self.clock()
        table: Table = AffiliateAggregate.__table__  # type: ignore[assignment]
        stmt = _insert(self.session.get_bind().dialect.name, table).values(
            app_id=self.app_id,
            code=code,
            day=day,
            event=event,
            currency=currency,
            conversions=1,
            value_sum_minor=value_minor,
            created_at=now,
            expires_at=expires_at,
        )
        new = stmt.excluded
        live = table.c.expires_at > now
        stmt = stmt.on_conflict_do_update(
            index_elements=["app_id", "code", "day", "event", "currency"],
            set_={
                "conversions": case((live, table.c.conversions + 1), else_=new.conversions),
                "value_sum_minor": case(
                    (live, table.c.value_sum_minor + new.value_sum_minor),
                    else_=new.value_sum_minor,
                ),
                "created_at": case((live, table.c.created_at), else_=new.created_at),
                "expires_at": case((live, table.c.expires_at), else_=new.expires_at),
            },
        ).returning(table.c.value_sum_minor)
        return _as_int((await self.session.execute(stmt)).scalar_one())

    def _window(self, code: str | None, since: date, until: date) -> list[ColumnElement[bool]]:
        m = AffiliateAggregate
        where = [*self._live(), m.day >= since, m.day <= until]
        if code is not None:
            where.append(m.code == code)
        return where

    async def daily(
        self, code: str | None, since: date, until: date, limit: int
    ) -> list[AggregateRow]:
        """Per UTC day, event and currency (summed over codes when `code` is None), oldest first."""
        m = AffiliateAggregate
        stmt = (
            select(m.day, m.event, m.currency, func.sum(m.conversions), func.sum(m.value_sum_minor))
            .where(*self._window(code, since, until))
            .group_by(m.day, m.event, m.currency)
            .order_by(m.day, m.event, m.currency)
            .limit(limit)
        )
        rows = (await self.session.execute(stmt)).all()
        return [
            AggregateRow(
                day=day,
                event=event,
                currency=currency,
                conversions=_as_int(count),
                value_sum_minor=_as_int(total),
            )
            for day, event, currency, count, total in rows
        ]

    async def totals(self, code: str | None, since: date, until: date) -> list[AggregateRow]:
        """Over the whole window, per event and currency."""
        m = AffiliateAggregate
        stmt = (
            select(m.event, m.currency, func.sum(m.conversions), func.sum(m.value_sum_minor))
            .where(*self._window(code, since, until))
            .group_by(m.event, m.currency)
            .order_by(m.event, m.currency)
        )
        rows = (await self.session.execute(stmt)).all()
        return [
            AggregateRow(
                event=event,
                currency=currency,
                conversions=_as_int(count),
                value_sum_minor=_as_int(total),
            )
            for event, currency, count, total in rows
        ]


class EventMarkRepository(TenantScopedRepository[AffiliateEventMark]):
    model = AffiliateEventMark

    async def claim(self, event_hash: str, expires_at: datetime) -> bool:
        """Mark an event id as counted; False when a live mark already exists (a duplicate).

        An expired mark that cleanup has not removed yet is taken over, not treated as live.
        """
        now = self.clock()
        table: Table = AffiliateEventMark.__table__  # type: ignore[assignment]
        stmt = _insert(self.session.get_bind().dialect.name, table).values(
            app_id=self.app_id, event_hash=event_hash, created_at=now, expires_at=expires_at
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["app_id", "event_hash"],
            set_={"created_at": stmt.excluded.created_at, "expires_at": stmt.excluded.expires_at},
            where=table.c.expires_at <= now,
        ).returning(table.c.event_hash)
        return (await self.session.execute(stmt)).first() is not None
