"""What App Store notifications teach us, keyed by hashes of Apple's transaction ids."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from stateless.kit.data.db import Base, UTCDateTime
from stateless.kit.data.tenancy import TenantOwned


class Entitlement(TenantOwned, Base):
    """Latest known state of one original transaction (a purchase or a subscription)."""

    __tablename__ = "storekit_entitlements"
    __table_args__ = (PrimaryKeyConstraint("app_id", "original_transaction_hash"),)

    original_transaction_hash: Mapped[str] = mapped_column(String(64))
    # active | grace | expired | revoked
    state: Mapped[str] = mapped_column(String(16))
    last_event: Mapped[str] = mapped_column(String(64))
    # signedDate of the notification that set this state: older notifications do not overwrite it
    event_signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    subscription_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    grace_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class NotificationReceipt(TenantOwned, Base):
    """A notificationUUID already processed, so Apple's retries are no-ops."""

    __tablename__ = "storekit_notification_receipts"
    __table_args__ = (PrimaryKeyConstraint("app_id", "notification_hash"),)

    notification_hash: Mapped[str] = mapped_column(String(64))
    notification_type: Mapped[str] = mapped_column(String(64))
