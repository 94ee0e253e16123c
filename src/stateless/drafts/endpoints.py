"""Drafts API: anyone holding the app's key and a draft's id may read it; listing needs sk."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.container import Container
from stateless.deps import API_V1, KeyedService, api_router
from stateless.drafts.models import Draft
from stateless.drafts.repository import StoredDraft
from stateless.drafts.schemas import Deleted, DraftIn, DraftList, DraftOut, DraftSummary
from stateless.drafts.service import DraftNotFound, DraftService
from stateless.kit.data.context import TenantContext
from stateless.kit.web.errors import PayloadTooLarge
from stateless.kit.web.openapi import problems
from stateless.lifecycle.policy import TtlOutOfRange

router = api_router(f"{API_V1}/drafts", ["drafts"])


def _build(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> DraftService:
    return DraftService(session, tenant, container.privacy, container.lifecycle.policy)


Service = Annotated[DraftService, Depends(KeyedService(_build, "any"))]
SecretService = Annotated[DraftService, Depends(KeyedService(_build, "secret"))]


def _out(service: DraftService, draft: Draft | StoredDraft, content: str | None = None) -> DraftOut:
    """The draft as answered; `content` when the caller already holds it in the clear (a
    create or replace), so nothing just sealed is unsealed again."""
    return DraftOut(
        id=draft.draft_id,
        content=service.open(draft) if content is None else content,
        size_bytes=draft.size_bytes,
        created_at=draft.created_at,
        expires_at=draft.expires_at,
        tenant=service.tenant.app_id,
    )


@router.post(
    "",
    name="drafts.create",
    summary="Create a draft",
    status_code=201,
    response_model=DraftOut,
    responses=problems(PayloadTooLarge, TtlOutOfRange),
)
async def create_draft(body: DraftIn, service: Service) -> DraftOut:
    """Store a draft for `ttl_seconds` (default 24 h, max 7 d). Keep the returned id."""
    draft = await service.create(body.content, body.ttl_seconds)
    return _out(service, draft, body.content)


@router.get("", name="drafts.list", summary="List drafts", response_model=DraftList)
async def list_drafts(
    service: SecretService,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DraftList:
    """List this app's live drafts (metadata only). Secret key only."""
    drafts = await service.list(limit)
    return DraftList(
        drafts=[
            DraftSummary(
                id=d.draft_id,
                size_bytes=d.size_bytes,
                created_at=d.created_at,
                expires_at=d.expires_at,
            )
            for d in drafts
        ],
        tenant=service.tenant.app_id,
    )


@router.get(
    "/{draft_id}",
    name="drafts.read",
    summary="Read a draft",
    response_model=DraftOut,
    responses=problems(DraftNotFound),
)
async def read_draft(draft_id: str, service: Service) -> DraftOut:
    """Read a live draft; expired or unknown ids answer 404."""
    return _out(service, await service.get(draft_id))


@router.put(
    "/{draft_id}",
    name="drafts.replace",
    summary="Replace a draft",
    response_model=DraftOut,
    responses=problems(DraftNotFound, PayloadTooLarge, TtlOutOfRange),
)
async def replace_draft(draft_id: str, body: DraftIn, service: Service) -> DraftOut:
    """Replace a draft's content; its lifetime restarts from now."""
    draft = await service.replace(draft_id, body.content, body.ttl_seconds)
    return _out(service, draft)


@router.delete(
    "/{draft_id}",
    name="drafts.delete",
    summary="Delete a draft",
    response_model=Deleted,
    responses=problems(DraftNotFound),
)
async def delete_draft(draft_id: str, service: Service) -> Deleted:
    """Delete a draft now."""
    await service.delete(draft_id)
    return Deleted()
