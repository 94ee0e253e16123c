"""storekit entitlements and notification receipts

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stateless.kit.data.db import UTCDateTime
from stateless.migrations.helpers import add_ttl_check

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "storekit_entitlements",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("original_transaction_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_event", sa.String(64), nullable=False),
        sa.Column("event_signed_at", UTCDateTime(), nullable=False),
        sa.Column("subscription_expires_at", UTCDateTime(), nullable=True),
        sa.Column("grace_expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "original_transaction_hash", name=op.f("pk_storekit_entitlements")
        ),
    )
    op.create_index(
        op.f("ix_storekit_entitlements_expires_at"), "storekit_entitlements", ["expires_at"]
    )
    add_ttl_check("storekit_entitlements")
    op.create_table(
        "storekit_notification_receipts",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("notification_hash", sa.String(64), nullable=False),
        sa.Column("notification_type", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "notification_hash", name=op.f("pk_storekit_notification_receipts")
        ),
    )
    op.create_index(
        op.f("ix_storekit_notification_receipts_expires_at"),
        "storekit_notification_receipts",
        ["expires_at"],
    )
    add_ttl_check("storekit_notification_receipts")


def downgrade() -> None:
    op.drop_index(
        op.f("ix_storekit_notification_receipts_expires_at"),
        table_name="storekit_notification_receipts",
    )
    op.drop_table("storekit_notification_receipts")
    op.drop_index(op.f("ix_storekit_entitlements_expires_at"), table_name="storekit_entitlements")
    op.drop_table("storekit_entitlements")
