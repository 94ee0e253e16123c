from __future__ import annotations

from pydantic import BaseModel, Field

from stateless.kit.wire.bounds import BoundedInput
from stateless.kit.wire.timestamps import Timestamp

MAX_DRAFT_BYTES = 1024 * 1024


class DraftIn(BoundedInput):
    content: str = Field(description="UTF-8 text, at most 1 MiB once encoded.")
    ttl_seconds: int | None = Field(
        default=None, description="Lifetime in seconds (default 24 h, at most 7 d)."
    )


class DraftOut(BaseModel):
    id: str
    content: str
    size_bytes: int
    created_at: Timestamp
    expires_at: Timestamp
    tenant: str


class DraftSummary(BaseModel):
    id: str
    size_bytes: int
    created_at: Timestamp
    expires_at: Timestamp


class DraftList(BaseModel):
    drafts: list[DraftSummary]
    tenant: str


class Deleted(BaseModel):
    status: str = "deleted"
