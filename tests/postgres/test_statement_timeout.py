"""A statement Postgres does not answer (a lock held elsewhere, a frozen server) answers 503
within DB_STATEMENT_TIMEOUT_SECONDS instead of holding the request for 30 s."""

from __future__ import annotations

import time

import asyncpg

from stateless.config import Settings
from tests.conftest import ClientFactory, TenantHandle
from tests.support import count_rows
from tests.test_core import assert_problem


async def test_a_stuck_statement_answers_503_quickly(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    client = await make_client(db_statement_timeout_seconds=1.0)
    dsn = settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    holder = await asyncpg.connect(dsn)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE drafts IN ACCESS EXCLUSIVE MODE")
        started = time.perf_counter()
        r = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": "x"})
        elapsed = time.perf_counter() - started
        assert_problem(r, 503, "database_unavailable")
        assert r.headers["retry-after"]
        assert elapsed < 3.0
        health = await client.get("/health")
        assert health.status_code == 200
        await transaction.rollback()
    finally:
        await holder.close()
    assert await count_rows(settings, "drafts") == 0
    # the lock is gone: the same replica serves again
    r = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": "x"})
    assert r.status_code == 201, r.text
