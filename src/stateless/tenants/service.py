"""Tenant lifecycle for the operator CLI: create, keys, configuration, deletion."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import utcnow
from stateless.kit.web.errors import BadRequest, Conflict, NotFound
from stateless.kit.web.ratelimit import parse_limit
from stateless.kit.wire.timestamps import format_timestamp
from stateless.tenants.models import ApiKey, Tenant
from stateless.tenants.repository import TenantRepository
from stateless.tenants.schemas import (
    APP_ID_PATTERN,
    IssuedKeys,
    KeyKind,
    TenantConfig,
    TenantSecrets,
)

SECRETS_PURPOSE = "tenant-secrets"
MASKED = "********"  # what `tenants show` prints for a secret that is set
_KIND_PREFIX: dict[KeyKind, str] = {"publishable": "pk", "secret": "sk"}


def hash_api_key(plaintext: str) -> str:
    """Keys carry 256 random bits, so a plain SHA-256 is enough; no slow KDF needed."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def split_api_key(plaintext: str) -> tuple[str, str] | None:
    """Return (kind prefix, key id) of a well-formed key, else None."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] not in ("pk", "sk") or len(parts[1]) != 12:
        return None
    return parts[0], parts[1]


def _new_key(app_id: str, kind: KeyKind) -> tuple[str, ApiKey]:
    key_id = secrets.token_hex(6)
    prefix = f"{_KIND_PREFIX[kind]}_{key_id}"
    plaintext = f"{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        key_id=key_id,
        app_id=app_id,
        kind=kind,
        prefix=prefix,
        key_hash=hash_api_key(plaintext),
        created_at=utcnow(),
    )
    return plaintext, row


def validate_app_id(app_id: str) -> None:
    if not APP_ID_PATTERN.fullmatch(app_id):
        raise BadRequest("APP_ID must match ^[A-Za-z0-9_-]{1,64}$")


def _validate_origin(origin: str) -> str:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise BadRequest(f"CORS origin must look like https://app.example.com, got {origin!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise BadRequest(f"CORS origin must be scheme://host[:port], got {origin!r}")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _validate_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRequest(f"{what} must be an http(s) URL")
    return url


@dataclass
class ConfigureRequest:
    """Options of `stateless tenants configure`; None means leave unchanged."""

    bundle_id: str | None = None
    app_apple_id: int | None = None
    apns_team_id: str | None = None
    apns_key_id: str | None = None
    apns_key_p8: str | None = None
    appstore_shared_secret: str | None = None
    notify_email: str | None = None
    email_from: str | None = None
    webhook_url: str | None = None
    cors_origins: list[str] | None = None
    rate_limits: list[str] | None = None
    mastodon_url: str | None = None
    mastodon_token: str | None = None
    allowed_content_types: list[str] | None = None
    webpush_generate_keys: bool = False
    webpush_contact: str | None = None
    appstore_issuer_id: str | None = None
    appstore_key_id: str | None = None
    appstore_api_key_p8: str | None = None
    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None


@dataclass
class ConfigureResult:
    changed: list[str]
    webhook_secret: str | None = None
    webpush_public_key: str | None = None


def _validate_vapid_contact(contact: str) -> str:
    """RFC 8292 `sub`: a mailto: address or an https: URL push services can reach you by."""
    parts = urlsplit(contact)
    if parts.scheme == "mailto" and "@" in parts.path and len(contact) <= 320:
        return contact
    if parts.scheme == "https" and parts.netloc and len(contact) <= 2048:
        return contact
    raise BadRequest(
        "--webpush-contact must be a mailto: address or an https: URL, "
        f"e.g. mailto:ops@example.com; got {contact[:80]!r}"
    )


class TenantService:
    def __init__(self, session: AsyncSession, kit: PrivacyKit) -> None:
        self.repo = TenantRepository(session)
        self.kit = kit

    async def create(self, app_id: str) -> IssuedKeys:
        validate_app_id(app_id)
        if await self.repo.get(app_id) is not None:
            raise Conflict(f"tenant {app_id} already exists")
        await self.repo.add(Tenant(app_id=app_id, created_at=utcnow(), config_json="{}"))
        return await self._issue_pair(app_id)

    async def _issue_pair(self, app_id: str) -> IssuedKeys:
        pk_plain, pk_row = _new_key(app_id, "publishable")
        sk_plain, sk_row = _new_key(app_id, "secret")
        await self.repo.add_key(pk_row)
        await self.repo.add_key(sk_row)
        return IssuedKeys(app_id=app_id, publishable_key=pk_plain, secret_key=sk_plain)

    async def _require(self, app_id: str) -> Tenant:
        tenant = await self.repo.get(app_id)
        if tenant is None:
            raise NotFound(f"no tenant {app_id}")
        return tenant

    async def _key_rows(self, app_id: str) -> list[dict[str, object]]:
        """Key prefixes and state (never the keys, which are only stored as hashes)."""
        now = utcnow()
        return [
            {
                "prefix": k.prefix,
                "kind": k.kind,
                "active": (k.revoked_at is None) and (k.expires_at is None or k.expires_at > now),
                "expires_at": format_timestamp(k.expires_at) if k.expires_at else None,
            }
            for k in await self.repo.keys_of(app_id)
        ]

    async def list_tenants(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for tenant in await self.repo.list_all():
            rows.append(
                {
                    "app_id": tenant.app_id,
                    "created_at": format_timestamp(tenant.created_at),
                    "keys": await self._key_rows(tenant.app_id),
                }
            )
        return rows

    async def show(self, app_id: str) -> dict[str, object]:
        """An app's keys and settings for the operator; every secret is masked (set or not)."""
        tenant = await self._require(app_id)
        secrets_ = self.read_secrets(tenant).model_dump()
        return {
            "app_id": tenant.app_id,
            "created_at": format_timestamp(tenant.created_at),
            "keys": await self._key_rows(tenant.app_id),
            "settings": self.read_config(tenant).model_dump(mode="json"),
            "secrets": {name: MASKED if value else None for name, value in secrets_.items()},
        }

    async def rotate_key(self, app_id: str, grace_seconds: int) -> IssuedKeys:
        """Issue a new pair; the old pair keeps working for `grace_seconds`, then stops."""
        await self._require(app_id)
        if grace_seconds < 0:
            raise BadRequest("grace period must be zero or positive")
        await self.repo.end_keys(app_id, utcnow() + timedelta(seconds=grace_seconds))
        return await self._issue_pair(app_id)

    async def revoke_key(self, app_id: str, key_prefix: str) -> str:
        await self._require(app_id)
        wanted = key_prefix.strip()
        parsed = split_api_key(wanted)
        if parsed:
            wanted = f"{parsed[0]}_{parsed[1]}"
        matches = [
            k
            for k in await self.repo.keys_of(app_id)
            if k.revoked_at is None and len(wanted) >= 9 and k.prefix.startswith(wanted)
        ]
        if not matches:
            raise NotFound(f"no active key of {app_id} starts with {key_prefix[:15]!r}")
        if len(matches) > 1:
            raise BadRequest("that prefix matches several keys; give more characters")
        matches[0].revoked_at = utcnow()
        await self.repo.session.flush()
        return matches[0].prefix

    async def delete(self, app_id: str) -> None:
        if not await self.repo.delete(app_id):
            raise NotFound(f"no tenant {app_id}")

    def read_config(self, tenant: Tenant) -> TenantConfig:
        return TenantConfig.model_validate_json(tenant.config_json or "{}")

    def read_secrets(self, tenant: Tenant) -> TenantSecrets:
        return open_secrets(self.kit, tenant.app_id, tenant.secrets_sealed)

    async def change_entitlements(
        self, app_id: str, change: EntitlementChange
    ) -> dict[str, list[str]]:
        """Rewrite the app's entitlement map (validated by the entitlements domain's `change`)."""
        tenant = await self._require(app_id)
        config = self.read_config(tenant)
        config.entitlements = change(dict(config.entitlements))
        tenant.config_json = config.model_dump_json(exclude_defaults=True)
        await self.repo.session.flush()
        return config.entitlements

    async def configure(self, app_id: str, request: ConfigureRequest) -> ConfigureResult:
        tenant = await self._require(app_id)
        config = self.read_config(tenant)
        sealed = self.read_secrets(tenant)
        changed: list[str] = []
        result = ConfigureResult(changed=changed)
        for name in (
            "bundle_id",
            "app_apple_id",
            "apns_team_id",
            "apns_key_id",
            "email_from",
            "appstore_issuer_id",
            "appstore_key_id",
        ):
            value = getattr(request, name)
            if value is not None:
                setattr(config, name, value)
                changed.append(name)
        if request.mastodon_url is not None:
            config.mastodon_url = _validate_url(request.mastodon_url, "--mastodon-url")
            changed.append("mastodon_url")
        if request.webhook_url is not None:
            config.webhook_url = _validate_url(request.webhook_url, "--webhook-url")
            changed.append("webhook_url")
            if sealed.webhook_secret is None:
                # Standard Webhooks: standard base64 of 32 random bytes after the prefix
                sealed.webhook_secret = (
                    "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
                )
                result.webhook_secret = sealed.webhook_secret
        if request.cors_origins is not None:
            config.cors_origins = sorted({_validate_origin(o) for o in request.cors_origins})
            changed.append("cors_origins")
        if request.rate_limits:
            for item in request.rate_limits:
                route, sep, limit = item.partition("=")
                if not sep or not route.strip():
                    raise BadRequest(f"--rate-limit wants ROUTE=LIMIT, got {item!r}")
                try:
                    parse_limit(limit.strip())
                except ValueError as exc:
                    raise BadRequest(str(exc)) from exc
                config.rate_limits[route.strip()] = limit.strip()
            changed.append("rate_limits")
        if request.allowed_content_types is not None:
            config.allowed_content_types = [
                t.strip().lower() for t in request.allowed_content_types
            ]
            changed.append("allowed_content_types")
        if request.webpush_contact is not None:
            config.webpush_contact = _validate_vapid_contact(request.webpush_contact)
            changed.append("webpush_contact")
        if request.webpush_generate_keys:
            from stateless.webpush.crypto import VapidKeys

            keys = VapidKeys.generate()
            sealed.webpush_vapid_private_pem = keys.private_pem
            config.webpush_public_key = result.webpush_public_key = keys.public_key
            changed.append("webpush_keys")
        for name in (
            "apns_key_p8",
            "appstore_shared_secret",
            "notify_email",
            "mastodon_token",
            "appstore_api_key_p8",
            "stripe_secret_key",
            "stripe_webhook_secret",
        ):
            value = getattr(request, name)
            if value is not None:
                setattr(sealed, name, value)
                changed.append(name)
        tenant.config_json = config.model_dump_json(exclude_defaults=True)
        tenant.secrets_sealed = seal_secrets(self.kit, app_id, sealed)
        await self.repo.session.flush()
        return result


EntitlementChange = Callable[[dict[str, list[str]]], dict[str, list[str]]]


def seal_secrets(kit: PrivacyKit, app_id: str, values: TenantSecrets) -> str | None:
    data = values.model_dump(exclude_none=True)
    if not data:
        return None
    return kit.encrypt_text(SECRETS_PURPOSE, app_id, json.dumps(data))


def open_secrets(kit: PrivacyKit, app_id: str, sealed: str | None) -> TenantSecrets:
    if not sealed:
        return TenantSecrets()
    return TenantSecrets.model_validate_json(kit.decrypt_text(SECRETS_PURPOSE, app_id, sealed))
