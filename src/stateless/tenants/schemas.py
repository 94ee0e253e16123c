"""Tenant configuration: plain settings, and the secrets that are sealed at rest."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict

# Re-exported: these live in kit so kit needs nothing from tenants.
from stateless.kit.data.context import KeyKind as KeyKind
from stateless.kit.data.context import TenantConfig as TenantConfig
from stateless.kit.data.context import TenantContext as TenantContext
from stateless.kit.data.context import VerifiedAppId as VerifiedAppId

APP_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_APP_ID_LENGTH = 64


def valid_app_id_or_none(raw: str | None) -> str | None:
    if raw and len(raw) <= MAX_APP_ID_LENGTH and APP_ID_PATTERN.fullmatch(raw):
        return raw
    return None


class TenantSecrets(BaseModel):
    """Secret settings; stored as one AES-GCM sealed blob, decrypted only where used."""

    model_config = ConfigDict(extra="ignore")

    notify_email: str | None = None
    apns_key_p8: str | None = None
    appstore_shared_secret: str | None = None
    webhook_secret: str | None = None
    mastodon_token: str | None = None
    webpush_vapid_private_pem: str | None = None
    appstore_api_key_p8: str | None = None
    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None


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
class IssuedKeys:
    app_id: str
    publishable_key: str
    secret_key: str
