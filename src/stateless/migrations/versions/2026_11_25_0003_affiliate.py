"""affiliate aggregates and event de-duplication marks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stateless.kit.data.db import UTCDateTime
from stateless.migrations.helpers import add_ttl_check

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Exact integer sums in minor units: NUMERIC on Postgres, 64-bit INTEGER on SQLite (no floats).
MINOR_SUM = sa.Numeric(38, 0).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "affiliate_aggregates",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("conversions", sa.BigInteger(), nullable=False),
        sa.Column("value_sum_minor", MINOR_SUM, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "code", "day", "event", "currency", name=op.f("pk_affiliate_aggregates")
        ),
    )
    op.create_index(
        op.f("ix_affiliate_aggregates_expires_at"), "affiliate_aggregates", ["expires_at"]
    )
    op.create_index(
        op.f("ix_affiliate_aggregates_app_id_day"), "affiliate_aggregates", ["app_id", "day"]
    )
    add_ttl_check("affiliate_aggregates")

    op.create_table(
        "affiliate_events",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("event_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "event_hash", name=op.f("pk_affiliate_events")),
    )
    op.create_index(op.f("ix_affiliate_events_expires_at"), "affiliate_events", ["expires_at"])
    add_ttl_check("affiliate_events")


def downgrade() -> None:
    op.drop_index(op.f("ix_affiliate_events_expires_at"), table_name="affiliate_events")
    op.drop_table("affiliate_events")
    op.drop_index(op.f("ix_affiliate_aggregates_app_id_day"), table_name="affiliate_aggregates")
    op.drop_index(op.f("ix_affiliate_aggregates_expires_at"), table_name="affiliate_aggregates")
    op.drop_table("affiliate_aggregates")
