"""Stored-file rows, always scoped to one tenant and to live rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from stateless.kit.data.tenancy import TenantScopedRepository
from stateless.storage.models import STATUS_UPLOADED, StoredFile


class StoredFileRepository(TenantScopedRepository[StoredFile]):
    model = StoredFile

    async def by_id(self, object_id: str) -> StoredFile | None:
        return await self.first(StoredFile.object_id == object_id)

    async def by_key(self, storage_key: str) -> StoredFile | None:
        return await self.first(StoredFile.storage_key == storage_key)

    async def live_keys(self, storage_keys: Sequence[str]) -> set[str]:
        """Which of these keys still belong to a live row (the orphan sweep keeps those)."""
        if not storage_keys:
            return set()
        rows = await self.all(StoredFile.storage_key.in_(list(storage_keys)))
        return {row.storage_key for row in rows}

    async def mark_uploaded(self, object_id: str, now: datetime) -> int:
        return await self.update_where(
            {"status": STATUS_UPLOADED, "uploaded_at": now}, StoredFile.object_id == object_id
        )

    async def delete_by_id(self, object_id: str) -> int:
        return await self.delete_where(StoredFile.object_id == object_id)
