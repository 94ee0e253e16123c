"""Postgres restarting (FATAL 57P03) or not answering at all: 503 problems, never 500.

Regressions found by `make faults`: 500s in the second after `pg_ctl start` while the server
replayed its WAL (the asyncpg error carries only its SQLSTATE), and 500s after the connect
timeout when the server accepted TCP but stayed silent (asyncpg raises the builtin TimeoutError).
"""

from __future__ import annotations

import time

from tests.conftest import ClientFactory, TenantHandle
from tests.peers.broken_postgres import frozen_postgres, starting_postgres
from tests.test_core import assert_problem


async def test_starting_up_database_answers_503_problems(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    async with starting_postgres() as peer:
        client = await make_client(database_url=peer.url, db_pool_timeout=2)
        for _ in range(3):
            r = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": "x"})
            assert_problem(r, 503, "database_unavailable")
            assert r.headers["retry-after"] == "5"
        assert peer.refused >= 3  # the answers came from the refusing server, not elsewhere


async def test_silent_database_answers_503_within_the_connect_timeout(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    async with frozen_postgres() as peer:
        client = await make_client(database_url=peer.url, db_pool_timeout=1)
        for _ in range(2):
            started = time.monotonic()
            r = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": "x"})
            assert_problem(r, 503, "database_unavailable")
            assert time.monotonic() - started < 3  # the 1 s connect timeout, not a hang
        assert peer.accepted >= 2
