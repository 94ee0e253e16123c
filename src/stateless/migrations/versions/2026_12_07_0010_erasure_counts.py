"""erasure counts: rows erased per app, kind and UTC hour (GET /admin/retention erased_last_24h)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stateless.kit.data.db import UTCDateTime
from stateless.migrations.helpers import add_ttl_check

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasure_counts",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("erased", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "kind", "hour", name=op.f("pk_erasure_counts")),
    )
    op.create_index(op.f("ix_erasure_counts_expires_at"), "erasure_counts", ["expires_at"])
    add_ttl_check("erasure_counts")


def downgrade() -> None:
    op.drop_index(op.f("ix_erasure_counts_expires_at"), table_name="erasure_counts")
    op.drop_table("erasure_counts")
