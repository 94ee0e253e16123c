"""The verified tenant of a request or a job, as every room sees it.

Only the checkpoints create these: `tenants/auth.py` for requests (key, path or signed URL)
and the background worker for queued work (tests/test_architecture.py enforces it).
Repositories accept nothing else, so tenant scoping cannot be skipped by passing a string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NewType

from pydantic import BaseModel, ConfigDict

# A tenant id that passed a checkpoint; repositories accept nothing else.
VerifiedAppId = NewType("VerifiedAppId", str)

KeyKind = Literal["publishable", "secret"]


class TenantConfig(BaseModel):
    """Non-secret settings; stored as JSON."""

    model_config = ConfigDict(extra="ignore")

    cors_origins: list[str] = []
    rate_limits: dict[str, str] = {}
    bundle_id: str | None = None
    app_apple_id: int | None = None
    apns_team_id: str | None = None
    apns_key_id: str | None = None
    email_from: str | None = None
    webhook_url: str | None = None
    mastodon_url: str | None = None
    allowed_content_types: list[str] | None = None
    webpush_public_key: str | None = None
    webpush_contact: str | None = None
    # Entitlement name -> the App Store product ids and Stripe price or product ids granting it.
    entitlements: dict[str, list[str]] = {}
    # App Store Server API credentials (the .p8 itself is a sealed secret).
    appstore_issuer_id: str | None = None
    appstore_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class TenantContext:
    """The verified tenant of a request: the only way into tenant-owned data."""

    app_id: VerifiedAppId
    scope: KeyKind
    key_id: str
    config: TenantConfig
    secrets_sealed: str | None
