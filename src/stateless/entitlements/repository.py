"""Entitlement queries, every one scoped to the tenant and to live rows (kit/data/tenancy.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, Table, bindparam, case, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from stateless.entitlements.models import (
    EntitlementDaily,
    EntitlementEventMark,
    EntitlementSource,
    ReconcileCursor,
)
from stateless.kit.data.tenancy import Scoped, TenantScopedRepository, scoped_select, scoped_update

_S: Any = EntitlementSource.__table__
# What /check reads: never whole ORM objects on the hot path.
CHECK_COLUMNS = (
    _S.c.source_hash,
    _S.c.store,
    _S.c.product_id,
    _S.c.parent_product_id,
    _S.c.state,
    _S.c.environment,
    _S.c.period_type,
    _S.c.will_renew,
    _S.c.purchased_at,
    _S.c.period_ends_at,
    _S.c.grace_ends_at,
    _S.c.revoked_at,
    _S.c.event_at,
    _S.c.expires_at,
)
CheckRow = Row[Any]
_BY_SUBJECT = scoped_select(
    EntitlementSource, _S.c.subject_hash == bindparam("subject"), columns=CHECK_COLUMNS
)
# The sliding extension a check makes (at most about once a day per source).
_EXTEND = scoped_update(
    EntitlementSource,
    {
        "expires_at": bindparam("new_expires_at"),
        "created_at": bindparam("new_created_at"),
        "verified_at": bindparam("new_created_at"),
    },
    _S.c.source_hash == bindparam("key"),
)
FIGURES = ("new", "renewals", "cancellations", "billing_issues", "expirations", "refunds")


def _insert(dialect: str, table: Table) -> Any:
    return pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)


class SourceRepository(TenantScopedRepository[EntitlementSource]):
    model = EntitlementSource

    async def for_subject(self, subject_hash: str) -> Sequence[CheckRow]:
        """The subject's live sources (one indexed lookup)."""
        return await self.run_rows(_BY_SUBJECT, {"subject": subject_hash})

    async def extend(self, source_hash: str, expires_at: datetime, now: datetime) -> None:
        """Restart a source's life from now (a verified use); created_at moves with it so the
        database's TTL guard holds."""
        await self.run_write(
            _EXTEND, {"key": source_hash, "new_expires_at": expires_at, "new_created_at": now}
        )

    async def by_hash(self, source_hash: str) -> EntitlementSource | None:
        """The live source, locked for this transaction on Postgres (FOR UPDATE), so two events
        for one purchase apply one after the other and the older-event rule holds."""
        stmt = self.select(EntitlementSource.source_hash == source_hash).limit(1)
        return (await self.session.scalars(stmt.with_for_update())).first()

    async def insert_new(self, values: dict[str, Any]) -> bool:
        """Insert a source unless one with its key appeared meanwhile (a concurrent event for
        the same purchase): False then, and the caller applies to that row instead."""
        table: Table = EntitlementSource.__table__  # type: ignore[assignment]
        stmt = (
            _insert(self.session.get_bind().dialect.name, table)
            .values(app_id=self.app_id, **values)
            .on_conflict_do_nothing(index_elements=["app_id", "source_hash"])
        )
        result: Any = await self.session.execute(stmt)
        return bool(result.rowcount)

    async def by_payment(self, payment_hash: str) -> EntitlementSource | None:
        return await self.first(EntitlementSource.payment_hash == payment_hash)

    async def drop_expired(self, source_hash: str) -> None:
        """An expired row (not yet cleaned up) gives its primary key to the fresh one."""
        await self.purge_expired(EntitlementSource.source_hash == source_hash)

    async def to_reconcile(
        self, store: str, lapse_before: datetime, limit: int
    ) -> Sequence[EntitlementSource]:
        """Sources that would lapse before `lapse_before`, or sit in grace or billing retry."""
        m = EntitlementSource
        stmt = (
            self.select(
                m.store == store,
                m.reference_sealed.is_not(None),
                or_(
                    m.state.in_(("grace", "billing_retry")),
                    (m.state.in_(("active", "cancelled")) & (m.period_ends_at < lapse_before)),
                ),
            )
            .order_by(m.period_ends_at)
            .limit(limit)
        )
        return (await self.session.scalars(stmt)).all()

    async def active_subjects(self, now: datetime) -> Sequence[Any]:
        """(subject hash, product, parent product) of every source granting access now."""
        m = EntitlementSource
        stmt = select(m.subject_hash, m.product_id, m.parent_product_id).where(
            *self._live(),
            m.state.in_(("active", "cancelled", "grace")),
            or_(
                m.period_ends_at.is_(None),
                m.period_ends_at > now,
                m.grace_ends_at > now,
            ),
        )
        return (await self.session.execute(stmt)).all()


class EventMarkRepository(TenantScopedRepository[EntitlementEventMark]):
    model = EntitlementEventMark

    async def mark(self, event_hash: str, now: datetime, expires_at: datetime) -> bool:
        """Record an event id; False when it was already applied (a retry or duplicate)."""
        table: Table = EntitlementEventMark.__table__  # type: ignore[assignment]
        if await self.first(EntitlementEventMark.event_hash == event_hash) is not None:
            return False
        await self.purge_expired(EntitlementEventMark.event_hash == event_hash)
        stmt = (
            _insert(self.session.get_bind().dialect.name, table)
            .values(
                app_id=self.app_id, event_hash=event_hash, created_at=now, expires_at=expires_at
            )
            .on_conflict_do_nothing(index_elements=["app_id", "event_hash"])
        )
        result: Any = await self.session.execute(stmt)
        return bool(result.rowcount)


class DailyRepository(TenantScopedRepository[EntitlementDaily]):
    model = EntitlementDaily

    async def add_figures(
        self,
        *,
        day: date,
        entitlement: str,
        store: str,
        product_id: str,
        currency: str,
        figures: dict[str, int],
        now: datetime,
        expires_at: datetime,
    ) -> None:
        """Add to one day's figures (the row is created on first use; an expired one restarts)."""
        table: Table = EntitlementDaily.__table__  # type: ignore[assignment]
        values: dict[str, Any] = {name: figures.get(name, 0) for name in FIGURES}
        values["revenue_minor"] = figures.get("revenue_minor", 0)
        stmt = _insert(self.session.get_bind().dialect.name, table).values(
            app_id=self.app_id,
            day=day,
            entitlement=entitlement,
            store=store,
            product_id=product_id,
            currency=currency,
            created_at=now,
            expires_at=expires_at,
            **values,
        )
        live = table.c.expires_at > now
        new = stmt.excluded
        set_: dict[str, Any] = {
            name: case((live, table.c[name] + new[name]), else_=new[name])
            for name in (*FIGURES, "revenue_minor")
        }
        set_["created_at"] = case((live, table.c.created_at), else_=new.created_at)
        set_["expires_at"] = case((live, table.c.expires_at), else_=new.expires_at)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["app_id", "day", "entitlement", "store", "product_id", "currency"],
                set_=set_,
            )
        )

    async def window(self, since: date, until: date) -> Sequence[Any]:
        m = EntitlementDaily
        stmt = (
            select(
                m.day,
                m.entitlement,
                m.store,
                m.product_id,
                m.currency,
                *(func.sum(getattr(m, name)) for name in (*FIGURES, "revenue_minor")),
            )
            .where(*self._live(), m.day >= since, m.day <= until)
            .group_by(m.day, m.entitlement, m.store, m.product_id, m.currency)
            .order_by(m.day, m.entitlement, m.store, m.product_id, m.currency)
        )
        return (await self.session.execute(stmt)).all()


class CursorRepository(TenantScopedRepository[ReconcileCursor]):
    model = ReconcileCursor

    async def get(self, environment: str) -> datetime | None:
        row = await self.first(ReconcileCursor.environment == environment)
        return row.history_until if row is not None else None

    async def put(
        self, environment: str, until: datetime, now: datetime, expires_at: datetime
    ) -> None:
        table: Table = ReconcileCursor.__table__  # type: ignore[assignment]
        stmt = _insert(self.session.get_bind().dialect.name, table).values(
            app_id=self.app_id,
            environment=environment,
            history_until=until,
            created_at=now,
            expires_at=expires_at,
        )
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["app_id", "environment"],
                set_={
                    "history_until": stmt.excluded.history_until,
                    "created_at": stmt.excluded.created_at,
                    "expires_at": stmt.excluded.expires_at,
                },
            )
        )


__all__ = [
    "CheckRow",
    "CursorRepository",
    "DailyRepository",
    "EventMarkRepository",
    "Scoped",
    "SourceRepository",
]
