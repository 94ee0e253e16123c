"""Conversion aggregates (count and exact sum per code, UTC day, event, currency) and the
keyed-hash marks that de-duplicate `event_id`s. No code_id, event_id or person is stored."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import BigInteger, Date, Index, Numeric, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from stateless.kit.data.db import Base
from stateless.kit.data.tenancy import TenantOwned

# Sums are integers in the currency's minor units, so adding them is exact on both databases:
# NUMERIC(38, 0) on Postgres (no overflow in practice), INTEGER (64-bit) on SQLite, which has no
# exact decimal type. Never a float.
MINOR_SUM = Numeric(38, 0).with_variant(BigInteger(), "sqlite")


class AffiliateAggregate(TenantOwned, Base):
    __tablename__ = "affiliate_aggregates"
    # The primary key is the aggregate's identity (app_id first), hence also its unique key.
    __table_args__ = (
        PrimaryKeyConstraint("app_id", "code", "day", "event", "currency"),
        Index("ix_affiliate_aggregates_app_id_day", "app_id", "day"),
    )

    code: Mapped[str] = mapped_column(String(16))  # canonical code: a MAC, not a person
    day: Mapped[date] = mapped_column(Date)  # UTC day of the conversion
    event: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))  # "" when the conversions carry no value
    conversions: Mapped[int] = mapped_column(BigInteger)
    value_sum_minor: Mapped[Decimal] = mapped_column(MINOR_SUM)


class AffiliateEventMark(TenantOwned, Base):
    """One `event_id` already counted, as a keyed hash, until its own expiry."""

    __tablename__ = "affiliate_events"
    __table_args__ = (PrimaryKeyConstraint("app_id", "event_hash"),)

    event_hash: Mapped[str] = mapped_column(String(64))
