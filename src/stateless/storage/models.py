"""One row per stored file: where its body lives, what was declared, and whether it arrived."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, PrimaryKeyConstraint, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stateless.kit.data.db import Base, UTCDateTime
from stateless.kit.data.tenancy import TenantOwned

STATUS_PENDING = "pending"
STATUS_UPLOADED = "uploaded"


class StoredFile(TenantOwned, Base):
    __tablename__ = "stored_files"
    __table_args__ = (
        PrimaryKeyConstraint("app_id", "object_id"),
        UniqueConstraint("app_id", "storage_key"),
    )

    object_id: Mapped[str] = mapped_column(String(32))
    # "<app_id>/<random>": never derived from anything the client sent.
    storage_key: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(255))
    content_length: Mapped[int] = mapped_column(BigInteger())
    # The client's filename may name a person: kept AES-GCM sealed, used only as metadata.
    filename_sealed: Mapped[str | None] = mapped_column(Text(), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=STATUS_PENDING)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
