"""Tenants are operator configuration, not end-user data: they carry no expiry; keys do."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stateless.kit.data.db import Base, UTCDateTime, utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Non-secret settings (CORS origins, rate limits, bundle id, URLs) as JSON text.
    config_json: Mapped[str] = mapped_column(Text, default="{}")
    # Secrets (APNs key, shared secret, notify address, tokens) as one AES-GCM sealed JSON blob.
    secrets_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    app_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("tenants.app_id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Rotated keys keep working until this instant (the grace period); None means no end.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
