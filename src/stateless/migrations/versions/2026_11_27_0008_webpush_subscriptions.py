"""web push subscriptions

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stateless.kit.data.db import UTCDateTime
from stateless.migrations.helpers import add_ttl_check

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webpush_subscriptions",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("subscriber_hash", sa.String(64), nullable=False),
        sa.Column("subscription_sealed", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "subscriber_hash", name=op.f("pk_webpush_subscriptions")),
    )
    op.create_index(
        op.f("ix_webpush_subscriptions_expires_at"), "webpush_subscriptions", ["expires_at"]
    )
    add_ttl_check("webpush_subscriptions")


def downgrade() -> None:
    op.drop_index(op.f("ix_webpush_subscriptions_expires_at"), table_name="webpush_subscriptions")
    op.drop_table("webpush_subscriptions")
