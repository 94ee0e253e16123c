"""upsert churn: tables whose rows are rewritten in place (device tokens, Web Push subscriptions)
vacuum at 2 % dead rows instead of 20 %, with a larger cost budget, and keep 10 % of each page
free so a row's new version can often stay on its page (Postgres only; docs/operations.md)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("ios_device_tokens", "webpush_subscriptions")
OPTIONS = {
    "fillfactor": "90",
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_vacuum_cost_limit": "1000",
    "autovacuum_analyze_scale_factor": "0.02",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    settings = ", ".join(f"{name} = {value}" for name, value in OPTIONS.items())
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} SET ({settings})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RESET ({', '.join(OPTIONS)})")
