"""The direct path's waits and dead connections (kit/data/direct.py), against real Postgres.

- A request waits at most DB_POOL_TIMEOUT for a pooled connection, then answers 503
  `database_unavailable` with Retry-After; nothing waits past pool + statement timeout.
- Pooled connections whose backends were terminated (`pg_terminate_backend`, as a restart
  does) are replaced: the next read answers 200, a write a 201 or a clean 503, never a 500. A
  SELECT whose connection dies under it runs once more on a fresh one; a write never does.
- A JSON bind is encoded once, and stores what SQLAlchemy's own path stores.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, bindparam, insert, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import create_async_engine

from stateless.config import Settings
from stateless.kit.data.db import LONE_WRITER, AutocommitWriter, postgres_connect_args
from stateless.kit.data.direct import DIRECT_APPLICATION_NAME, PostgresDirect
from tests.conftest import Client, ClientFactory, TenantHandle
from tests.support import count_rows
from tests.test_core import assert_problem


def _dsn(settings: Settings) -> str:
    return settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _direct(client: Client) -> PostgresDirect:
    writer = client.app.state.container.sessionmaker.kw["info"][LONE_WRITER]
    assert isinstance(writer, PostgresDirect)
    return writer


@asynccontextmanager
async def _locked(settings: Settings, table: str) -> AsyncIterator[asyncpg.Connection]:
    """`table` locked against every other session until the block ends (or `rollback`)."""
    holder = await asyncpg.connect(_dsn(settings))
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    try:
        yield holder
    finally:
        if not holder.is_closed() and holder.is_in_transaction():
            await transaction.rollback()
        await holder.close()


async def _terminate_direct_backends(settings: Settings, *, waiting_on_lock: int = 0) -> int:
    """Terminate the direct pool's sessions in the test database (once `waiting_on_lock` of
    them wait on a lock, when asked); returns how many."""
    admin = await asyncpg.connect(_dsn(settings))
    try:
        where = "application_name = $1 AND datname = current_database()"
        deadline = time.monotonic() + 10
        while waiting_on_lock:
            waiting = await admin.fetchval(
                f"SELECT count(*) FROM pg_stat_activity WHERE {where} AND wait_event_type = 'Lock'",
                DIRECT_APPLICATION_NAME,
            )
            if waiting >= waiting_on_lock:
                break
            assert time.monotonic() < deadline, f"{waiting} statements waiting on the lock"
            await asyncio.sleep(0.02)
        rows = await admin.fetch(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {where}",
            DIRECT_APPLICATION_NAME,
        )
        return sum(1 for row in rows if row[0])
    finally:
        await admin.close()


async def _draft(client: Client, tenant: TenantHandle, content: str) -> str:
    r = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": content})
    assert r.status_code == 201, r.text
    draft_id: str = r.json()["id"]
    return draft_id


async def test_waiting_for_a_pooled_connection_is_bounded_by_the_pool_timeout(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    """One connection, held by a statement stuck behind a lock: the requests queued behind it
    answer 503 after DB_POOL_TIMEOUT (1 s), not when the lock goes; the stuck one after
    DB_STATEMENT_TIMEOUT_SECONDS (3 s)."""
    pool_timeout, statement_timeout = 1.0, 3.0
    client = await make_client(
        db_pool_size=1, db_pool_timeout=pool_timeout, db_statement_timeout_seconds=statement_timeout
    )
    direct = _direct(client)

    async def create() -> tuple[Any, float]:
        started = time.perf_counter()
        r = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": "x"})
        return r, time.perf_counter() - started

    async with _locked(settings, "drafts"):
        answers = await asyncio.gather(*(create() for _ in range(4)))
    for r, _ in answers:
        assert_problem(r, 503, "database_unavailable")
        assert r.headers["retry-after"] == "5"
    elapsed = sorted(seconds for _, seconds in answers)
    assert all(pool_timeout * 0.9 <= s < pool_timeout + 1.5 for s in elapsed[:3]), elapsed
    assert statement_timeout * 0.9 <= elapsed[3] < pool_timeout + statement_timeout + 1, elapsed
    assert direct._in_use == 0  # every wait and hold was counted back: no leaked slot
    assert await count_rows(settings, "drafts") == 0
    # the lock is gone: the same replica serves again, on its one connection
    await _draft(client, tenant, "after the lock")
    assert direct._in_use == 0


async def test_terminated_pool_connections_are_replaced(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    """Every pooled connection's backend terminated while idle (as a Postgres restart or an
    administrator does): the next read answers 200, a write 201 or a clean 503, never a 500."""
    client = await make_client()
    draft_id = await _draft(client, tenant, "kept")
    # several connections in the pool, all idle
    reads = await asyncio.gather(
        *(client.get(f"/api/v1/drafts/{draft_id}", headers=tenant.pk) for _ in range(6))
    )
    assert {r.status_code for r in reads} == {200}
    for _ in range(2):
        assert await _terminate_direct_backends(settings) >= 1
        r = await client.get(f"/api/v1/drafts/{draft_id}", headers=tenant.pk)
        assert r.status_code == 200, r.text
        assert r.json()["content"] == "kept"
        reads = await asyncio.gather(
            *(client.get(f"/api/v1/drafts/{draft_id}", headers=tenant.pk) for _ in range(6))
        )
        assert {r.status_code for r in reads} == {200}, [r.text for r in reads]
    assert await _terminate_direct_backends(settings) >= 1
    r = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": "write"})
    if r.status_code != 201:
        assert_problem(r, 503, "database_unavailable")
        assert r.headers["retry-after"]
    # and the pool serves writes again
    await _draft(client, tenant, "after")


async def test_a_read_is_retried_once_when_its_connection_dies_and_a_write_is_not(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    """Backends terminated while a read and a write wait on a lock: the read runs again on a
    fresh connection and answers 200; the write answers 503 and is not run again (once the
    lock goes, no second draft appears)."""
    client = await make_client(db_statement_timeout_seconds=20)
    direct = _direct(client)
    draft_id = await _draft(client, tenant, "read me")
    async with _locked(settings, "drafts") as holder:
        read = asyncio.create_task(client.get(f"/api/v1/drafts/{draft_id}", headers=tenant.pk))
        write = asyncio.create_task(
            client.post("/api/v1/drafts", headers=tenant.pk, json={"content": "lost"})
        )
        assert await _terminate_direct_backends(settings, waiting_on_lock=2) == 2
        written = await asyncio.wait_for(write, 10)
        deadline = time.monotonic() + 10
        while direct.retried_reads < 1:  # the read is back on a fresh connection
            assert time.monotonic() < deadline and not read.done()
            await asyncio.sleep(0.01)
        await holder.execute("ROLLBACK")
        r = await asyncio.wait_for(read, 10)
    assert r.status_code == 200, r.text
    assert r.json()["content"] == "read me"
    assert_problem(written, 503, "database_unavailable")
    assert written.headers["retry-after"]
    assert direct.retried_reads == 1
    assert direct.dead_connections == 2
    assert await count_rows(settings, "drafts") == 1  # the write ran once, and died
    assert direct._in_use == 0


@pytest.fixture
async def json_table(settings: Settings) -> AsyncIterator[Table]:
    name = f"direct_json_{int(time.time() * 1000) % 10**9}"
    admin = await asyncpg.connect(_dsn(settings))
    await admin.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, doc json, docb jsonb)")
    try:
        yield Table(
            name,
            MetaData(),
            Column("id", Integer, primary_key=True),
            Column("doc", JSON),
            Column("docb", JSONB),
        )
    finally:
        await admin.execute(f"DROP TABLE {name}")
        await admin.close()


VALUES: list[Any] = [
    {"a": 1, "nested": {"list": [1, 2.5, "x", None, True]}, "ü": "ß \u2603"},
    [1, "two", {"three": 3}],
    "a string",
    42,
    None,
]


async def test_json_binds_are_encoded_once_and_match_sqlalchemy(
    settings: Settings, json_table: Table
) -> None:
    encoded: list[Any] = []

    def serializer(value: Any) -> str:
        encoded.append(value)
        return json.dumps(value)

    engine = create_async_engine(settings.database_url, json_serializer=serializer)
    sqlalchemy_path = AutocommitWriter(engine)
    direct = await PostgresDirect.open(
        settings, engine.dialect, sqlalchemy_path, postgres_connect_args(settings, engine.url)
    )
    statement = insert(json_table)
    by_id = select(json_table.c.doc, json_table.c.docb).where(json_table.c.id == bindparam("i"))
    try:
        assert direct._plan(statement, {"id": 0, "doc": 1, "docb": 1}) is not None  # not fallback
        for i, value in enumerate(VALUES):
            encoded.clear()
            await direct(statement, {"id": i, "doc": value, "docb": value})
            assert encoded == [value, value]  # once per column, nothing encoded twice
            await sqlalchemy_path(statement, {"id": 100 + i, "doc": value, "docb": value})
            [row] = await direct.rows(by_id, {"i": i})
            assert (row.doc, row.docb) == (value, value)
        admin = await asyncpg.connect(_dsn(settings))
        try:
            stored = {
                r["id"]: (r["doc"], r["docb"], r["kind"])
                for r in await admin.fetch(
                    f"SELECT id, doc::text AS doc, docb::text AS docb, jsonb_typeof(docb) AS kind "
                    f"FROM {json_table.name}"
                )
            }
        finally:
            await admin.close()
    finally:
        await direct.close()
        await engine.dispose()
    kinds = ["object", "array", "string", "number", "null"]
    for i, value in enumerate(VALUES):
        doc, docb, kind = stored[i]
        assert doc == json.dumps(value)  # json keeps the text as sent: one encoding
        assert json.loads(docb) == value and kind == kinds[i]
        assert stored[i] == stored[100 + i]  # the same as SQLAlchemy's own path stores
