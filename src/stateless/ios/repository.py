"""Device-token queries, all scoped to one tenant and to live rows by TenantScopedRepository."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from stateless.ios.models import DeviceToken
from stateless.kit.tenancy import Scoped, TenantScopedRepository, scoped_insert

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
        if not device_hashes:
            return 0
        return await self.delete_where(DeviceToken.device_hash.in_(device_hashes))

    def _push_columns(self) -> Any:
        app_id, live = self._live()
        return select(
            DeviceToken.device_hash,
            DeviceToken.token_sealed,
            DeviceToken.environment,
            DeviceToken.topic,
        ).where(app_id, live)

    async def by_hashes(self, device_hashes: Sequence[str]) -> Sequence[PushRow]:
        """The live tokens among these hashes (unknown or expired ones are simply absent)."""
        stmt = self._push_columns().where(DeviceToken.device_hash.in_(device_hashes))
        return (await self.session.execute(stmt)).all()

    async def page_after(self, after_hash: str | None, limit: int) -> Sequence[PushRow]:
        """Keyset pagination over the primary key: constant memory and cost per page."""
        stmt = self._push_columns()
        if after_hash is not None:
            stmt = stmt.where(DeviceToken.device_hash > after_hash)
        stmt = stmt.order_by(DeviceToken.device_hash).limit(limit)
        return (await self.session.execute(stmt)).all()
