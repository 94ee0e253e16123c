"""Rows erased per app, kind and UTC hour: what `erased_last_24h` sums (GET /admin/retention).

Written in the transaction that deletes the rows (cleanup batches, erasure requests), so every
replica and restart sees the same figures; a bucket expires 24 h after its hour began, and the
cleanup deletes it like any expired row. It holds counts only, nothing about a person.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from stateless.kit.data.db import Base, UTCDateTime
from stateless.kit.data.tenancy import TenantOwned


class ErasureCount(TenantOwned, Base):
    __tablename__ = "erasure_counts"
    __table_args__ = (PrimaryKeyConstraint("app_id", "kind", "hour"),)

    kind: Mapped[str] = mapped_column(String(64))
    hour: Mapped[datetime] = mapped_column(UTCDateTime())  # the bucket's start, whole UTC hour
    erased: Mapped[int] = mapped_column(BigInteger)
