"""Draft queries: the read and the create are hot paths, so they are Scoped Core statements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert

from stateless.drafts.models import Draft
from stateless.kit.data.tenancy import TenantScopedRepository, scoped_insert, scoped_select

_TABLE: Any = Draft.__table__
_BY_ID = scoped_select(Draft, _TABLE.c.draft_id == bindparam("draft_id"))
_INSERT = scoped_insert(insert(_TABLE))


@dataclass(slots=True)
class StoredDraft:
    """A draft as read: a detached value, so changing it changes nothing stored. A plain
    record, not an ORM instance: building a mapped instance (its instance state and
    instrumented attributes) cost about a twentieth of a draft read."""

    draft_id: str
    content_sealed: str
    size_bytes: int
    app_id: str
    created_at: datetime
    expires_at: datetime


class DraftRepository(TenantScopedRepository[Draft]):
    model = Draft

    async def by_id(self, draft_id: str) -> StoredDraft | None:
        """The live draft, as a detached value: changing it changes nothing stored."""
        row = await self.run_row(_BY_ID, {"draft_id": draft_id})
        return StoredDraft(**row._mapping) if row is not None else None

    async def insert(self, draft: Draft) -> Draft:
        """One INSERT; the tenant and created_at are stamped by the base, as for every row."""
        draft.app_id, draft.created_at = self.app_id, self.clock()
        values = {
            "created_at": draft.created_at,
            "draft_id": draft.draft_id,
            "content_sealed": draft.content_sealed,
            "size_bytes": draft.size_bytes,
            "expires_at": draft.expires_at,
        }
        await self.run_write(_INSERT, values)
        return draft
