from __future__ import annotations

from stateless.drafts.models import Draft
from stateless.kit.tenancy import TenantScopedRepository


class DraftRepository(TenantScopedRepository[Draft]):
    model = Draft

    async def by_id(self, draft_id: str) -> Draft | None:
        return await self.first(Draft.draft_id == draft_id)
