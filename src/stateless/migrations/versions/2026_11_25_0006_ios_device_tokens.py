"""ios device tokens

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stateless.kit.data.db import UTCDateTime
from stateless.migrations.helpers import add_ttl_check

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ios_device_tokens",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("device_hash", sa.String(64), nullable=False),
        sa.Column("token_sealed", sa.Text(), nullable=False),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("topic", sa.String(255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "device_hash", name=op.f("pk_ios_device_tokens")),
    )
    op.create_index(op.f("ix_ios_device_tokens_expires_at"), "ios_device_tokens", ["expires_at"])
    add_ttl_check("ios_device_tokens")


def downgrade() -> None:
    op.drop_index(op.f("ix_ios_device_tokens_expires_at"), table_name="ios_device_tokens")
    op.drop_table("ios_device_tokens")
