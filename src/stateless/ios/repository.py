"""Device-token queries, all scoped to one tenant and to live rows by TenantScopedRepository."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam
from sqlalchemy.dialects import postgresql, sqlite

from stateless.ios.models import DeviceToken
from stateless.kit.data.tenancy import (
    Scoped,
    TenantScopedRepository,
    scoped_delete,
    scoped_insert,
    scoped_select,
)

# Columns a push needs; never whole ORM objects, so 100,000 rows never sit in the identity map.
PushRow = Row[tuple[str, str, str, str | None]]


def _upsert(dialect: Any) -> Scoped:
    """Built once per dialect with bound parameters: constructing the ON CONFLICT statement
    costs more CPU than running it, and registering is the hottest write path."""
    table: Any = DeviceToken.__table__
    columns = (
        "app_id",
        "device_hash",
        "token_sealed",
        "environment",
        "topic",
        "created_at",
        "expires_at",
    )
    stmt = dialect.insert(table).values({name: bindparam(name) for name in columns})
    return scoped_insert(
        stmt.on_conflict_do_update(
            index_elements=[table.c.app_id, table.c.device_hash],
            set_={name: stmt.excluded[name] for name in columns[2:]},
        )
    )


_UPSERT = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}
_T: Any = DeviceToken.__table__
_PUSH_COLUMNS = (_T.c.device_hash, _T.c.token_sealed, _T.c.environment, _T.c.topic)
_HASHES: Any = bindparam("hashes", expanding=True)
_DELETE_HASHES = scoped_delete(DeviceToken, _T.c.device_hash.in_(_HASHES))
_BY_HASHES = scoped_select(DeviceToken, _T.c.device_hash.in_(_HASHES), columns=_PUSH_COLUMNS)


def _page(*where: Any) -> Scoped:
    select = scoped_select(DeviceToken, *where, columns=_PUSH_COLUMNS)
    statement: Any = select.statement
    return Scoped(statement.order_by(_T.c.device_hash).limit(bindparam("n")), "read")


_FIRST_PAGE = _page()
_PAGE_AFTER = _page(_T.c.device_hash > bindparam("after"))


class DeviceTokenRepository(TenantScopedRepository[DeviceToken]):
    model = DeviceToken

    async def upsert(
        self,
        device_hash: str,
        token_sealed: str,
        environment: str,
        topic: str | None,
        expires_at: datetime,
    ) -> None:
        """One INSERT ... ON CONFLICT DO UPDATE: register and re-register cost one statement.

        A re-registration restarts the row's life (created_at too), so the database's TTL CHECK
        (expires_at <= created_at + cap) holds however often a device comes back. A conflicting
        row that expired but was not yet cleaned up is simply overwritten.
        """
        values: dict[str, Any] = {
            "device_hash": device_hash,
            "token_sealed": token_sealed,
            "environment": environment,
            "topic": topic,
            "expires_at": expires_at,
        }
        dialect = self.session.get_bind().dialect.name
        await self.run_write(_UPSERT[dialect], values)

    async def delete_hashes(self, device_hashes: Sequence[str]) -> int:
        """One DELETE (a lone write unless a transaction is open): a push deleting dead tokens
        batch by batch holds no connection between batches."""
        if not device_hashes:
            return 0
        return await self.run_write(_DELETE_HASHES, {"hashes": list(device_hashes)})

    async def by_hashes(self, device_hashes: Sequence[str]) -> Sequence[PushRow]:
        """The live tokens among these hashes (unknown or expired ones are simply absent)."""
        return await self.run_rows(_BY_HASHES, {"hashes": list(device_hashes)})

    async def page_after(self, after_hash: str | None, limit: int) -> Sequence[PushRow]:
        """Keyset pagination over the primary key: constant memory and cost per page."""
        if after_hash is None:
            return await self.run_rows(_FIRST_PAGE, {"n": limit})
        return await self.run_rows(_PAGE_AFTER, {"after": after_hash, "n": limit})
