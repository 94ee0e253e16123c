"""Tenant configuration: plain settings, and the secrets that are sealed at rest."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NewType

from pydantic import BaseModel, ConfigDict

APP_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_APP_ID_LENGTH = 64

# A tenant id that passed authentication; repositories accept nothing else.
VerifiedAppId = NewType("VerifiedAppId", str)

KeyKind = Literal["publishable", "secret"]


def valid_app_id_or_none(raw: str | None) -> str | None:
    if raw and len(raw) <= MAX_APP_ID_LENGTH and APP_ID_PATTERN.fullmatch(raw):
        return raw
    return None


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


class TenantSecrets(BaseModel):
    """Secret settings; stored as one AES-GCM sealed blob, decrypted only where used."""

    model_config = ConfigDict(extra="ignore")

    notify_email: str | None = None
    apns_key_p8: str | None = None
    appstore_shared_secret: str | None = None
    webhook_secret: str | None = None
    mastodon_token: str | None = None
    webpush_vapid_private_pem: str | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    kind: KeyKind
    prefix: str
    key_hash: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable_at(self, now: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True, slots=True)
class TenantSnapshot:
    """What a request needs to know about a tenant, cached for a few seconds."""

    app_id: str
    config: TenantConfig
    secrets_sealed: str | None
    keys: tuple[KeyRecord, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class TenantContext:
    """The verified tenant of a request: the only way into tenant-owned data."""

    app_id: VerifiedAppId
    scope: KeyKind
    key_id: str
    config: TenantConfig
    secrets_sealed: str | None


@dataclass(frozen=True, slots=True)
class IssuedKeys:
    app_id: str
    publishable_key: str
    secret_key: str
