"""All SQL about tenants and keys (operator-level data, so no tenant scoping here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.tenants.models import ApiKey, Tenant


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, app_id: str) -> Tenant | None:
        return await self.session.get(Tenant, app_id)

    async def list_all(self) -> Sequence[Tenant]:
        result = await self.session.scalars(select(Tenant).order_by(Tenant.app_id))
        return result.all()

    async def add(self, tenant: Tenant) -> None:
        self.session.add(tenant)
        await self.session.flush()

    async def delete(self, app_id: str) -> int:
        await self.session.execute(delete(ApiKey).where(ApiKey.app_id == app_id))
        result = await self.session.execute(delete(Tenant).where(Tenant.app_id == app_id))
        return int(getattr(result, "rowcount", 0) or 0)

    async def keys_of(self, app_id: str) -> Sequence[ApiKey]:
        result = await self.session.scalars(
            select(ApiKey).where(ApiKey.app_id == app_id).order_by(ApiKey.created_at)
        )
        return result.all()

    async def add_key(self, key: ApiKey) -> None:
        self.session.add(key)
        await self.session.flush()

    async def end_keys(self, app_id: str, at: datetime) -> int:
        """End the tenant's current keys at `at`, never extending a key that already ends sooner."""
        stmt = update(ApiKey).where(
            ApiKey.app_id == app_id,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > at),
        )
        result = await self.session.execute(stmt.values(expires_at=at))
        return int(getattr(result, "rowcount", 0) or 0)
