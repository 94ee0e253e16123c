"""Shared migration steps: the Postgres guard that refuses rows outliving MAX_DATA_TTL_DAYS."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

TTL_GUARD_FUNCTION = "stateless_max_data_ttl"


def ttl_guard_sql(days: int) -> str:
    # IMMUTABLE so a CHECK may call it; `stateless migrate` re-creates it when the setting changes.
    return (
        f"CREATE OR REPLACE FUNCTION {TTL_GUARD_FUNCTION}() RETURNS interval "
        f"LANGUAGE sql IMMUTABLE AS $$ SELECT make_interval(days => {int(days)}) $$"
    )


def is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def create_ttl_guard() -> None:
    if is_postgres():
        days = int(op.get_context().config.attributes.get("max_data_ttl_days", 90))  # type: ignore[union-attr]
        op.execute(sa.text(ttl_guard_sql(days)))


def drop_ttl_guard() -> None:
    if is_postgres():
        op.execute(sa.text(f"DROP FUNCTION IF EXISTS {TTL_GUARD_FUNCTION}()"))


def add_ttl_check(table: str) -> None:
    """Postgres only: the database itself refuses a row that would outlive the cap."""
    if is_postgres():
        op.create_check_constraint(
            "max_ttl", table, f"expires_at <= created_at + {TTL_GUARD_FUNCTION}()"
        )
