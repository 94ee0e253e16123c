"""The one base for tenant-owned data, and the repository base that scopes every statement.

A repository built on `TenantScopedRepository` adds `app_id = :tenant AND expires_at > now`
to every read, update and delete, so neither the tenant filter nor the expiry can be forgotten.
Hot paths use `Scoped` statements: Core statements built once, with the tenant and expiry
conditions (or, for inserts, the tenant stamp) inside them as bound parameters that only the
repository fills in, so a caller can neither leave them out nor pass another tenant's id. They
run on the session's connection without the ORM unit of work; a write of one statement, when no
transaction is open, runs alone in autocommit (one round trip, no BEGIN/COMMIT).
The only unscoped access to these tables is the cleanup service; `erase_tenant`,
`erase_keyed` (one subject's rows) and `purge_expired` are the scoped ways to delete more than
live rows, and `expired_backlog` the one scoped read of expired rows (counts, no content).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import (
    ColumnElement,
    Delete,
    Executable,
    Insert,
    Row,
    Select,
    String,
    Update,
    bindparam,
    delete,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from stateless.kit.data.context import TenantContext, VerifiedAppId
from stateless.kit.data.db import LONE_WRITER, UTCDateTime, utcnow
from stateless.kit.data.direct import LoneWriter


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

# The scope parameters. Only `TenantScopedRepository._params` gives them values.
_TENANT = "scope_app_id"
_NOW = "scope_now"


@dataclass(frozen=True, slots=True)
class Scoped:
    """A Core statement on a tenant-owned table with its scope built in. Build one with
    `scoped_select`, `scoped_update`, `scoped_delete` or `scoped_insert` (once, at import: the
    statement's compiled form is then cached), and run it with the repository's `run_*`."""

    statement: Executable
    kind: Literal["read", "write", "insert"]


def _scope(model: type[TenantOwned]) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    table: Any = model.__table__  # type: ignore[attr-defined]
    return (
        table.c.app_id == bindparam(_TENANT),
        table.c.expires_at > bindparam(_NOW, type_=UTCDateTime()),
    )


def scoped_select(
    model: type[TenantOwned], *where: ColumnElement[bool], columns: Sequence[Any] = ()
) -> Scoped:
    """SELECT (all columns, or `columns`) FROM the model's live rows of the tenant WHERE ..."""
    table: Any = model.__table__  # type: ignore[attr-defined]
    stmt: Select[Any] = select(*columns) if columns else select(table)
    return Scoped(stmt.where(*_scope(model), *where), "read")


def scoped_update(
    model: type[TenantOwned], values: Mapping[str, Any], *where: ColumnElement[bool]
) -> Scoped:
    table: Any = model.__table__  # type: ignore[attr-defined]
    stmt: Update = update(table).where(*_scope(model), *where).values(**values)
    return Scoped(stmt, "write")


def scoped_delete(model: type[TenantOwned], *where: ColumnElement[bool]) -> Scoped:
    table: Any = model.__table__  # type: ignore[attr-defined]
    stmt: Delete = delete(table).where(*_scope(model), *where)
    return Scoped(stmt, "write")


def scoped_insert(statement: Insert) -> Scoped:
    """An INSERT (or an upsert) into a tenant-owned table: the repository stamps `app_id` and
    `created_at` into its parameters, so a row can only ever be written for its own tenant."""
    table: Any = statement.table
    if "app_id" not in table.c or "expires_at" not in table.c:
        raise TypeError(f"{table.name} is not a tenant-owned table")
    return Scoped(statement, "insert")


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

    # -- Core statements, no unit of work ----------------------------------------------------

    def _params(self, scoped: Scoped, params: Mapping[str, Any]) -> dict[str, Any]:
        if scoped.kind == "insert":
            if "expires_at" not in params:
                raise TypeError("a tenant-owned row needs its expires_at")
            created_at = params.get("created_at") or self.clock()
            return {**params, "app_id": self.app_id, "created_at": created_at}
        return {**params, _TENANT: self.app_id, _NOW: self.clock()}

    async def _connection(self) -> AsyncConnection:
        return await self.session.connection()

    async def run_rows(
        self, scoped: Scoped, params: Mapping[str, Any] | None = None, *, limit: int | None = None
    ) -> Sequence[Row[Any]]:
        """Rows of a scoped SELECT: inside the session's transaction when one is open, else
        alone on a connection taken for this statement only."""
        if scoped.kind != "read":
            raise TypeError("run_rows takes a scoped_select")
        stmt: Any = scoped.statement
        if limit is not None:
            stmt = stmt.limit(limit)
        values = self._params(scoped, params or {})
        writer: LoneWriter | None = self.session.info.get(LONE_WRITER)
        if writer is None or self.session.in_transaction():
            conn = await self._connection()
            return (await conn.execute(stmt, values)).all()
        # No transaction to join: read on a connection held only for this statement, so a
        # session that does slow work between reads (a push) pins no connection meanwhile.
        return await writer.rows(stmt, values)

    async def run_row(
        self, scoped: Scoped, params: Mapping[str, Any] | None = None
    ) -> Row[Any] | None:
        rows = await self.run_rows(scoped, params)
        return rows[0] if rows else None

    async def run_write(self, scoped: Scoped, params: Mapping[str, Any] | None = None) -> int:
        """Run one scoped INSERT, UPDATE or DELETE; returns the affected row count.

        Inside an open transaction it joins it. Otherwise the statement is the whole write, so it
        runs alone on an autocommit connection: one round trip instead of BEGIN, it, COMMIT.
        A service that needs several writes to stand or fall together runs them in one
        transaction (`async with session.begin()` or the request's session after a first write).
        """
        if scoped.kind == "read":
            raise TypeError("run_write takes a scoped insert, update or delete")
        values = self._params(scoped, params or {})
        writer: LoneWriter | None = self.session.info.get(LONE_WRITER)
        if writer is None or self.session.in_transaction():
            conn = await self._connection()
            result: Any = await conn.execute(scoped.statement, values)
            return int(getattr(result, "rowcount", 0) or 0)
        return await writer(scoped.statement, values)

    # -- scoped deletes beyond live rows --------------------------------------------------------

    async def purge_expired(self, *where: ColumnElement[bool]) -> int:
        """Delete this tenant's expired rows matching `where` now, ahead of the cleanup service
        (an expired row may still hold a primary key a fresh row needs). Live rows stay."""
        model: Any = self.model
        stmt = delete(model).where(
            model.app_id == self.app_id, model.expires_at <= self.clock(), *where
        )
        result = await self.session.execute(stmt.execution_options(synchronize_session=False))
        return int(getattr(result, "rowcount", 0) or 0)

    async def erase_tenant(self, app_id: str, *, limit: int | None = None) -> int:
        """Delete rows of this tenant, live and expired (the admin "erase my data" path).

        `app_id` must be the repository's own tenant: naming it twice makes the intent explicit
        and leaves no way to reach another tenant, or every tenant, from here. With `limit`,
        at most that many rows go per call (the caller loops, one short transaction each).
        """
        if app_id != self.app_id or not app_id:
            raise PermissionError("erase_tenant only erases the repository's own tenant")
        model: Any = self.model
        if limit is None:
            stmt: Any = delete(model).where(model.app_id == app_id)
        else:
            table: Any = model.__table__
            keys = list(table.primary_key.columns)
            batch = select(*keys).where(model.app_id == app_id).limit(limit)
            if len(keys) == 1:
                stmt = delete(model).where(keys[0].in_(batch.scalar_subquery()))
            else:
                stmt = delete(model).where(model.app_id == app_id, tuple_(*keys).in_(batch))
        result = await self.session.execute(stmt.execution_options(synchronize_session=False))
        return int(getattr(result, "rowcount", 0) or 0)

    async def erase_keyed(self, column: str, values: Sequence[str]) -> int:
        """Delete this tenant's rows, live and expired, whose `column` holds one of `values`
        (erasure on request: the keyed hashes of a subject's identifiers). Own tenant only."""
        if not values:
            return 0
        model: Any = self.model
        stmt = delete(model).where(model.app_id == self.app_id, getattr(model, column).in_(values))
        result = await self.session.execute(stmt.execution_options(synchronize_session=False))
        return int(getattr(result, "rowcount", 0) or 0)

    async def keyed_rows(self, column: str, values: Sequence[str]) -> Sequence[M]:
        """This tenant's rows, live and expired, whose `column` holds one of `values`: what
        `erase_keyed` is about to delete, for a kind whose hook must see them first."""
        if not values:
            return []
        model: Any = self.model
        stmt = select(self.model).where(
            model.app_id == self.app_id, getattr(model, column).in_(values)
        )
        return (await self.session.scalars(stmt)).all()

    async def expired_backlog(self) -> tuple[int, datetime | None]:
        """How many of this tenant's rows have expired but are not erased yet, and the oldest
        expiry among them (None when there are none). An index range on expires_at."""
        model: Any = self.model
        stmt = select(func.count(), func.min(model.expires_at)).where(
            model.app_id == self.app_id, model.expires_at <= self.clock()
        )
        count, oldest = (await self.session.execute(stmt)).one()
        return int(count), oldest

    # -- ORM reads and writes (identity map: rows a service changes and the session flushes) --

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
