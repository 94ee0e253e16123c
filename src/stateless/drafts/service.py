"""Draft rules: size cap, TTL within policy, content sealed with the tenant's draft key."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from stateless.drafts.models import Draft
from stateless.drafts.repository import DraftRepository, StoredDraft
from stateless.drafts.schemas import MAX_DRAFT_BYTES
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import utcnow
from stateless.kit.web.errors import NotFound, PayloadTooLarge
from stateless.lifecycle.policy import TtlPolicy
from stateless.tenants.schemas import TenantContext

PURPOSE = "draft-content"


class DraftNotFound(NotFound):
    code, title = "draft_not_found", "Draft not found"


class DraftService:
    def __init__(
        self, session: AsyncSession, tenant: TenantContext, kit: PrivacyKit, policy: TtlPolicy
    ) -> None:
        self.repo = DraftRepository(session, tenant)
        self.tenant = tenant
        self.kit = kit
        self.policy = policy

    def _seal(self, content: str) -> tuple[str, int]:
        raw = content.encode("utf-8")
        if len(raw) > MAX_DRAFT_BYTES:
            raise PayloadTooLarge(f"Draft content exceeds {MAX_DRAFT_BYTES} bytes")
        return self.kit.encrypt(PURPOSE, self.tenant.app_id, raw), len(raw)

    def open(self, draft: Draft | StoredDraft) -> str:
        return self.kit.decrypt(PURPOSE, self.tenant.app_id, draft.content_sealed).decode("utf-8")

    async def create(self, content: str, ttl_seconds: int | None) -> Draft:
        expires_at = self.policy.expires_at("drafts", ttl_seconds, utcnow())
        sealed, size = self._seal(content)
        draft = Draft(
            draft_id=secrets.token_hex(16),
            content_sealed=sealed,
            size_bytes=size,
            expires_at=expires_at,
        )
        return await self.repo.insert(draft)

    async def get(self, draft_id: str) -> StoredDraft:
        draft = await self.repo.by_id(draft_id)
        if draft is None:
            raise DraftNotFound(f"No draft {draft_id[:64]}")
        return draft

    async def list(self, limit: int) -> Sequence[Draft]:
        return await self.repo.all(limit=limit)

    async def replace(self, draft_id: str, content: str, ttl_seconds: int | None) -> StoredDraft:
        draft = await self.get(draft_id)
        sealed, size = self._seal(content)
        expires_at = self.policy.expires_at("drafts", ttl_seconds, utcnow())
        await self.repo.update_where(
            {"content_sealed": sealed, "size_bytes": size, "expires_at": expires_at},
            Draft.draft_id == draft_id,
        )
        draft.content_sealed, draft.size_bytes, draft.expires_at = sealed, size, expires_at
        return draft

    async def delete(self, draft_id: str) -> None:
        if not await self.repo.delete_where(Draft.draft_id == draft_id):
            raise DraftNotFound(f"No draft {draft_id[:64]}")
