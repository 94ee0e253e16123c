"""entitlements: sources, Stripe event marks, daily aggregates, reconciliation cursors

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stateless.kit.data.db import UTCDateTime
from stateless.migrations.helpers import add_ttl_check

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _owned() -> list[sa.Column[object]]:
    return [
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "entitlement_sources",
        *_owned(),
        sa.Column("source_hash", sa.String(64), nullable=False),
        sa.Column("store", sa.String(16), nullable=False),
        sa.Column("subject_hash", sa.String(64), nullable=False),
        sa.Column("subject_sealed", sa.Text(), nullable=False),
        sa.Column("reference_sealed", sa.Text(), nullable=True),
        sa.Column("customer_hash", sa.String(64), nullable=True),
        sa.Column("payment_hash", sa.String(64), nullable=True),
        sa.Column("product_id", sa.String(256), nullable=False),
        sa.Column("parent_product_id", sa.String(256), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("period_type", sa.String(8), nullable=False),
        sa.Column("will_renew", sa.Boolean(), nullable=False),
        sa.Column("purchased_at", UTCDateTime(), nullable=True),
        sa.Column("period_ends_at", UTCDateTime(), nullable=True),
        sa.Column("grace_ends_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("event_at", UTCDateTime(), nullable=False),
        sa.Column("last_event", sa.String(64), nullable=False),
        sa.Column("verified_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "source_hash", name=op.f("pk_entitlement_sources")),
    )
    op.create_index(
        op.f("ix_entitlement_sources_expires_at"), "entitlement_sources", ["expires_at"]
    )
    op.create_index(
        "ix_entitlement_sources_subject", "entitlement_sources", ["app_id", "subject_hash"]
    )
    op.create_index(
        "ix_entitlement_sources_payment", "entitlement_sources", ["app_id", "payment_hash"]
    )
    op.create_index(
        "ix_entitlement_sources_period_ends_at", "entitlement_sources", ["period_ends_at"]
    )
    add_ttl_check("entitlement_sources")

    op.create_table(
        "entitlement_event_marks",
        *_owned(),
        sa.Column("event_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "event_hash", name=op.f("pk_entitlement_event_marks")),
    )
    op.create_index(
        op.f("ix_entitlement_event_marks_expires_at"), "entitlement_event_marks", ["expires_at"]
    )
    add_ttl_check("entitlement_event_marks")

    op.create_table(
        "entitlement_daily",
        *_owned(),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("entitlement", sa.String(64), nullable=False),
        sa.Column("store", sa.String(16), nullable=False),
        sa.Column("product_id", sa.String(256), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("new", sa.Integer(), nullable=False),
        sa.Column("renewals", sa.Integer(), nullable=False),
        sa.Column("cancellations", sa.Integer(), nullable=False),
        sa.Column("billing_issues", sa.Integer(), nullable=False),
        sa.Column("expirations", sa.Integer(), nullable=False),
        sa.Column("refunds", sa.Integer(), nullable=False),
        sa.Column("revenue_minor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id",
            "day",
            "entitlement",
            "store",
            "product_id",
            "currency",
            name=op.f("pk_entitlement_daily"),
        ),
    )
    op.create_index(op.f("ix_entitlement_daily_expires_at"), "entitlement_daily", ["expires_at"])
    add_ttl_check("entitlement_daily")

    op.create_table(
        "entitlement_reconcile_cursors",
        *_owned(),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("history_until", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "environment", name=op.f("pk_entitlement_reconcile_cursors")
        ),
    )
    op.create_index(
        op.f("ix_entitlement_reconcile_cursors_expires_at"),
        "entitlement_reconcile_cursors",
        ["expires_at"],
    )
    add_ttl_check("entitlement_reconcile_cursors")


def downgrade() -> None:
    for table in (
        "entitlement_reconcile_cursors",
        "entitlement_daily",
        "entitlement_event_marks",
        "entitlement_sources",
    ):
        op.drop_table(table)
