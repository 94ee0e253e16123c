"""Task records and idempotency records: both short-lived, neither holds an address or a token.

A queued task keeps its context AES-GCM sealed (it may contain recipients) only until it has run;
results are written by the task types without personal data.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stateless.kit.data.db import Base, UTCDateTime
from stateless.kit.data.tenancy import TenantOwned


class BotTask(TenantOwned, Base):
    __tablename__ = "bot_tasks"
    __table_args__ = (
        PrimaryKeyConstraint("app_id", "task_id"),
        Index("ix_bot_tasks_status_next_attempt_at", "status", "next_attempt_at"),
    )

    task_id: Mapped[str] = mapped_column(String(32))
    task_type: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    context_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    base_url: Mapped[str | None] = mapped_column(String(512), nullable=True)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A broadcast's journal (cursor per channel and counts), written after every page.
    progress_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_detail: Mapped[str | None] = mapped_column(String(512), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BotIdempotencyRecord(TenantOwned, Base):
    __tablename__ = "bot_idempotency"
    __table_args__ = (PrimaryKeyConstraint("app_id", "key_hash"),)

    key_hash: Mapped[str] = mapped_column(String(64))
    body_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # pending | done
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
