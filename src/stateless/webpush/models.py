"""One row per (tenant, subscriber): the browser's subscription sealed, the subscriber id hashed."""

from __future__ import annotations

from sqlalchemy import PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stateless.kit.data.db import Base
from stateless.kit.data.tenancy import TenantOwned


class WebPushSubscription(TenantOwned, Base):
    __tablename__ = "webpush_subscriptions"
    __ttl_kind__ = "webpush_subscriptions"
    # The primary key doubles as the keyset-pagination order when pushing to every subscriber.
    __table_args__ = (PrimaryKeyConstraint("app_id", "subscriber_hash"),)

    subscriber_hash: Mapped[str] = mapped_column(String(64))
    # endpoint URL, p256dh and auth as one AES-GCM sealed JSON object
    subscription_sealed: Mapped[str] = mapped_column(Text)
