"""ttl guard and drafts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stateless.kit.data.db import UTCDateTime
from stateless.migrations.helpers import add_ttl_check, create_ttl_guard, drop_ttl_guard

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_ttl_guard()
    op.create_table(
        "drafts",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("draft_id", sa.String(32), nullable=False),
        sa.Column("content_sealed", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "draft_id", name=op.f("pk_drafts")),
    )
    op.create_index(op.f("ix_drafts_expires_at"), "drafts", ["expires_at"])
    add_ttl_check("drafts")


def downgrade() -> None:
    op.drop_index(op.f("ix_drafts_expires_at"), table_name="drafts")
    op.drop_table("drafts")
    drop_ttl_guard()
