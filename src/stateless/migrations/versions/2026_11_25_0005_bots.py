"""bots: task records and idempotency records

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stateless.kit.data.db import UTCDateTime
from stateless.migrations.helpers import add_ttl_check

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bot_tasks",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("task_type", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("context_sealed", sa.Text(), nullable=True),
        sa.Column("base_url", sa.String(512), nullable=True),
        sa.Column("result_json", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_detail", sa.String(512), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "task_id", name=op.f("pk_bot_tasks")),
    )
    op.create_index(op.f("ix_bot_tasks_expires_at"), "bot_tasks", ["expires_at"])
    op.create_index(
        "ix_bot_tasks_status_next_attempt_at", "bot_tasks", ["status", "next_attempt_at"]
    )
    add_ttl_check("bot_tasks")

    op.create_table(
        "bot_idempotency",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_sealed", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "key_hash", name=op.f("pk_bot_idempotency")),
    )
    op.create_index(op.f("ix_bot_idempotency_expires_at"), "bot_idempotency", ["expires_at"])
    add_ttl_check("bot_idempotency")


def downgrade() -> None:
    op.drop_index(op.f("ix_bot_idempotency_expires_at"), table_name="bot_idempotency")
    op.drop_table("bot_idempotency")
    op.drop_index("ix_bot_tasks_status_next_attempt_at", table_name="bot_tasks")
    op.drop_index(op.f("ix_bot_tasks_expires_at"), table_name="bot_tasks")
    op.drop_table("bot_tasks")
