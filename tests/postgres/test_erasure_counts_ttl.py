"""The erasure counters carry the database's TTL guard like every tenant-owned table."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from stateless.config import Settings
from tests.support import count_rows, sql


async def test_postgres_refuses_a_counter_that_would_outlive_the_cap(settings: Settings) -> None:
    """The counters table carries the TTL CHECK like every tenant-owned table (Postgres)."""
    insert = (
        "INSERT INTO erasure_counts (app_id, kind, hour, erased, created_at, expires_at) "
        "VALUES ('t', 'drafts', date_trunc('hour', now()), 1, now(), now() + interval :life)"
    )
    await sql(settings, insert.replace(":life", "'1 day'"))
    with pytest.raises(IntegrityError, match="ck_erasure_counts_max_ttl"):
        await sql(settings, insert.replace(":life", "'91 days'").replace("'t'", "'u'"))
    assert await count_rows(settings, "erasure_counts") == 1
