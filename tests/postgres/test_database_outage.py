"""Postgres down: requests answer 503 problems quickly (bounded by the pool timeout), never 500."""

from __future__ import annotations

from tests.conftest import ClientFactory, TenantHandle
from tests.test_core import assert_problem


async def test_database_outage_answers_503_problems_not_500(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    """Point a replica at a database port where nothing listens: problems say 503, quickly."""
    dead = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
    client = await make_client(database_url=dead, db_pool_timeout=2)
    for _ in range(3):
        r = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": "x"})
        assert_problem(r, 503, "database_unavailable")
        assert r.headers["retry-after"] == "5"
    assert_problem(await client.get("/health/ready"), 503, "service_unavailable")
