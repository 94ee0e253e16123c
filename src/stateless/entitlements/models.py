"""Entitlement sources (one row per store purchase), Stripe event marks, daily aggregates and
the reconciliation cursor. No plaintext identifier: the subject, Apple's original transaction id
and Stripe's subscription, customer and payment ids are keyed hashes; the two values a later call
needs (the subject for tenant webhooks, the store id for reconciliation) are AES-GCM sealed."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, Index, Integer, PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stateless.kit.data.db import Base, UTCDateTime
from stateless.kit.data.tenancy import TenantOwned


class EntitlementSource(TenantOwned, Base):
    """What one store purchase (an App Store original transaction or a Stripe subscription or
    one-time payment) grants its subject, and until when."""

    __tablename__ = "entitlement_sources"
    __table_args__ = (
        PrimaryKeyConstraint("app_id", "source_hash"),
        Index("ix_entitlement_sources_subject", "app_id", "subject_hash"),
        Index("ix_entitlement_sources_payment", "app_id", "payment_hash"),
        Index("ix_entitlement_sources_period_ends_at", "period_ends_at"),
    )

    # keyed hash of "<store>:<original transaction id | subscription id | payment intent id>"
    source_hash: Mapped[str] = mapped_column(String(64))
    store: Mapped[str] = mapped_column(String(16))  # app_store | stripe
    subject_hash: Mapped[str] = mapped_column(String(64))
    subject_sealed: Mapped[str] = mapped_column(Text)
    # the store's own id, sealed: reconciliation asks the store about it
    reference_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    customer_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Stripe: keyed hash of the payment intent that last paid, so a refund finds its source
    payment_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    product_id: Mapped[str] = mapped_column(String(256))
    # Stripe: the product a price belongs to (the map may name either); Apple: None
    parent_product_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # active | cancelled | grace | billing_retry | expired | revoked
    state: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str] = mapped_column(String(16))  # production | sandbox
    period_type: Mapped[str] = mapped_column(String(8), default="normal")
    will_renew: Mapped[bool] = mapped_column(Boolean, default=False)
    purchased_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # when access ends without renewal (None: a purchase that never lapses)
    period_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    grace_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # the store's time of the newest event applied: older events never overwrite it
    event_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_event: Mapped[str] = mapped_column(String(64))
    # last verified event, check or reconciliation: the 90-day cap counts from here
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EntitlementEventMark(TenantOwned, Base):
    """A store event already applied (Stripe event id, kept as a keyed hash for 8 days), so the
    store's retries and duplicates are no-ops."""

    __tablename__ = "entitlement_event_marks"
    __table_args__ = (PrimaryKeyConstraint("app_id", "event_hash"),)

    event_hash: Mapped[str] = mapped_column(String(64))


class EntitlementDaily(TenantOwned, Base):
    """Per day, entitlement, store, product and currency: counts and revenue (minor units).
    Counts live in the row with currency ''; revenue in one row per currency."""

    __tablename__ = "entitlement_daily"
    __table_args__ = (
        PrimaryKeyConstraint("app_id", "day", "entitlement", "store", "product_id", "currency"),
    )

    day: Mapped[date] = mapped_column(Date)
    entitlement: Mapped[str] = mapped_column(String(64))
    store: Mapped[str] = mapped_column(String(16))
    product_id: Mapped[str] = mapped_column(String(256))
    currency: Mapped[str] = mapped_column(String(3))
    new: Mapped[int] = mapped_column(Integer, default=0)
    renewals: Mapped[int] = mapped_column(Integer, default=0)
    cancellations: Mapped[int] = mapped_column(Integer, default=0)
    billing_issues: Mapped[int] = mapped_column(Integer, default=0)
    expirations: Mapped[int] = mapped_column(Integer, default=0)
    refunds: Mapped[int] = mapped_column(Integer, default=0)
    revenue_minor: Mapped[int] = mapped_column(BigInteger, default=0)


class ReconcileCursor(TenantOwned, Base):
    """How far App Store notification history has been read, per environment."""

    __tablename__ = "entitlement_reconcile_cursors"
    __table_args__ = (PrimaryKeyConstraint("app_id", "environment"),)

    environment: Mapped[str] = mapped_column(String(16))
    history_until: Mapped[datetime] = mapped_column(UTCDateTime())
