"""One row per (tenant, device): the APNs token sealed, the device id only as a keyed hash."""

from __future__ import annotations

from sqlalchemy import PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stateless.kit.data.db import Base
from stateless.kit.data.tenancy import TenantOwned


class DeviceToken(TenantOwned, Base):
    __tablename__ = "ios_device_tokens"
    # The primary key doubles as the keyset-pagination order when pushing to every device.
    __table_args__ = (PrimaryKeyConstraint("app_id", "device_hash"),)

    device_hash: Mapped[str] = mapped_column(String(64))
    token_sealed: Mapped[str] = mapped_column(Text)
    environment: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str | None] = mapped_column(String(255), nullable=True)
