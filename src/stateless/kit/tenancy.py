"""The one base for tenant-owned data, and the repository base that scopes every statement.

A repository built on `TenantScopedRepository` adds `app_id = :tenant AND expires_at > now`
to every read, update and delete, so neither the tenant filter nor the expiry can be forgotten.
The only unscoped access to these tables is the cleanup service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, String, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from stateless.kit.context import TenantContext, VerifiedAppId
from stateless.kit.db import UTCDateTime, utcnow


class TenantOwned:
    """Mixin: every tenant-owned table has app_id, created_at and a NOT NULL, indexed expires_at.

    Subclasses declare their primary key with app_id first (distributable by tenant); their
    TTL rule is named where they are registered (each domain's lifecycle.py).
    """

    app_id: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    @declared_attr
    def expires_at(cls) -> Mapped[datetime]:
        return mapped_column(UTCDateTime(), nullable=False, index=True)


M = TypeVar("M", bound=TenantOwned)


class TenantScopedRepository(Generic[M]):
    model: type[M]

    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext | VerifiedAppId,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session = session
        self.app_id: str = tenant.app_id if isinstance(tenant, TenantContext) else tenant
        self.clock = clock

    @classmethod
    def for_model(cls, model: type[Any]) -> type[TenantScopedRepository[Any]]:
        """A scoped repository for any tenant-owned model (used by generic admin counts)."""
        return type(f"{model.__name__}Repository", (cls,), {"model": model})

    def _live(self) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
        model: Any = self.model
        return (model.app_id == self.app_id, model.expires_at > self.clock())

    def select(self, *where: ColumnElement[bool]) -> Select[M]:
        return select(self.model).where(*self._live(), *where)

    async def first(self, *where: ColumnElement[bool]) -> M | None:
        result = await self.session.scalars(self.select(*where).limit(1))
        return result.first()

    async def all(self, *where: ColumnElement[bool], limit: int | None = None) -> Sequence[M]:
        stmt = self.select(*where)
        if limit is not None:
            stmt = stmt.limit(limit)
        return (await self.session.scalars(stmt)).all()

    async def count(self, *where: ColumnElement[bool]) -> int:
        model: Any = self.model
        stmt = select(func.count()).select_from(model).where(*self._live(), *where)
        return int((await self.session.execute(stmt)).scalar_one())

    async def update_where(self, values: dict[str, Any], *where: ColumnElement[bool]) -> int:
        stmt = update(self.model).where(*self._live(), *where).values(**values)
        result = await self.session.execute(stmt.execution_options(synchronize_session=False))
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete_where(self, *where: ColumnElement[bool]) -> int:
        stmt = delete(self.model).where(*self._live(), *where)
        result = await self.session.execute(stmt.execution_options(synchronize_session=False))
        return int(getattr(result, "rowcount", 0) or 0)

    def add(self, row: M, expires_at: datetime) -> M:
        """Stamp a new row with this tenant, now and its expiry, then stage it."""
        row.app_id = self.app_id
        row.created_at = self.clock()
        row.expires_at = expires_at
        self.session.add(row)
        return row
