"""stored files

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stateless.kit.data.db import UTCDateTime
from stateless.migrations.helpers import add_ttl_check

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stored_files",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(32), nullable=False),
        sa.Column("storage_key", sa.String(200), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("content_length", sa.BigInteger(), nullable=False),
        sa.Column("filename_sealed", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "object_id", name=op.f("pk_stored_files")),
        sa.UniqueConstraint(
            "app_id", "storage_key", name=op.f("uq_stored_files_app_id_storage_key")
        ),
    )
    op.create_index(op.f("ix_stored_files_expires_at"), "stored_files", ["expires_at"])
    add_ttl_check("stored_files")


def downgrade() -> None:
    op.drop_index(op.f("ix_stored_files_expires_at"), table_name="stored_files")
    op.drop_table("stored_files")
