from __future__ import annotations

from sqlalchemy import PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stateless.kit.data.db import Base
from stateless.kit.data.tenancy import TenantOwned


class Draft(TenantOwned, Base):
    __tablename__ = "drafts"
    __table_args__ = (PrimaryKeyConstraint("app_id", "draft_id"),)

    draft_id: Mapped[str] = mapped_column(String(32))
    content_sealed: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column()
