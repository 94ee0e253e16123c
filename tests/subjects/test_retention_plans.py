"""The retention figures, the leader's gauges and erasure by subject are index lookups: over a
device-token table of 100k rows, the plan of every statement they run on it has no table scan
(Postgres `EXPLAIN`: no `Seq Scan`; SQLite `EXPLAIN QUERY PLAN`: no `SCAN`)."""

from __future__ import annotations

import sqlite3
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url

from stateless.config import Settings
from stateless.container import Container
from stateless.lifecycle.scheduler import CleanupScheduler
from stateless.lifecycle.wiring import cleanup_service
from tests.conftest import Client, TenantFactory
from tests.subjects.conftest import ERASE, RETENTION, make_app, register_device
from tests.support import sql

ROWS = 100_000
TABLE = "ios_device_tokens"

# 1,000 rows of app-a, the rest spread over 99 other apps; about 1 % expired, as between passes.
_POSTGRES_LOAD = f"""
INSERT INTO {TABLE} (app_id, device_hash, token_sealed, environment, created_at, expires_at)
SELECT CASE WHEN g <= 1000 THEN 'app-a' ELSE 'load-' || (g % 99) END, md5(g::text), 'x',
       'production', now(),
       CASE WHEN g % 97 = 0 THEN now() - interval '1 minute' ELSE now() + interval '30 days' END
FROM generate_series(1, {ROWS}) g
"""
_SQLITE_LOAD = f"""
WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {ROWS})
INSERT INTO {TABLE} (app_id, device_hash, token_sealed, environment, created_at, expires_at)
SELECT CASE WHEN g <= 1000 THEN 'app-a' ELSE 'load-' || (g % 99) END, printf('%032d', g), 'x',
       'production', datetime('now'),
       CASE WHEN g % 97 = 0 THEN datetime('now', '-1 minute') ELSE datetime('now', '+30 days') END
FROM s
"""


class StatementLog:
    """Every statement the app's engines send, with its parameters, as the driver gets them."""

    def __init__(self, container: Container) -> None:
        self.seen: list[tuple[str, Any]] = []
        self._contexts: set[int] = set()
        self._held: list[Any] = []
        engines = {container.engine.sync_engine}
        read_engine = container.read_sessionmaker.kw.get("bind")
        if read_engine is not None:
            engines.add(read_engine.sync_engine)
        for engine in engines:
            event.listen(engine, "before_cursor_execute", self._record)

    def _record(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, *_: Any
    ) -> None:
        # Postgres reads run on an autocommit view of the same engine: both listeners fire.
        if id(context) not in self._contexts:
            self._contexts.add(id(context))
            self._held.append(context)  # alive, so its id is never reused meanwhile
            self.seen.append((statement, parameters))

    def on(self, table: str) -> list[tuple[str, Any]]:
        return [(s, p) for s, p in self.seen if table in s and not s.lstrip().startswith("INSERT")]


async def _postgres_plans(settings: Settings, statements: list[tuple[str, Any]]) -> list[str]:
    url = make_url(settings.database_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False), ssl=False)
    try:
        plans = []
        for statement, parameters in statements:
            rows = await conn.fetch("EXPLAIN " + statement, *(parameters or ()))
            plans.append("\n".join(row[0] for row in rows))
        return plans
    finally:
        await conn.close()


def _sqlite_table_scans(plan: str) -> list[str]:
    """SCAN lines over stored tables; a SCAN of a subquery the plan built itself (a CO-ROUTINE
    or MATERIALIZE step, e.g. the backlog count's capped range of the expiry index) reads only
    the rows that subquery searched for."""
    lines = plan.splitlines()
    built = {line.split()[1] for line in lines if line.startswith(("CO-ROUTINE", "MATERIALIZE"))}
    return [line for line in lines if line.startswith("SCAN") and line.split()[1] not in built]


def _sqlite_plans(settings: Settings, statements: list[tuple[str, Any]]) -> list[str]:
    conn = sqlite3.connect(make_url(settings.database_url).database or "")
    try:
        return [
            "\n".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + s, p or ()))
            for s, p in statements
        ]
    finally:
        conn.close()


async def test_retention_gauges_and_erasure_use_indexes_on_100k_rows(
    subjects_client: Client, make_tenant: TenantFactory, settings: Settings
) -> None:
    client = subjects_client
    app = await make_app(make_tenant, "app-a")
    await register_device(client, app, "subject-device")
    if settings.is_sqlite:
        await sql(settings, _SQLITE_LOAD)
    else:
        await sql(settings, _POSTGRES_LOAD)
        await sql(settings, f"ANALYZE {TABLE}")
    container: Container = client.app.state.container
    log = StatementLog(container)

    retention = await client.get(RETENTION, headers=app.sk)
    scheduler = CleanupScheduler(
        cleanup_service(container), container.background.cleanup, container.metrics, 60
    )
    await scheduler.measure_backlog()
    erase = await client.post(ERASE, headers=app.pk, json={"device_ids": ["subject-device"]})

    assert retention.status_code == 200 and erase.status_code == 200
    figures = retention.json()["kinds"]["device_tokens"]
    assert figures["live"] + figures["expired_awaiting_erasure"] == 1001
    assert figures["expired_awaiting_erasure"] == len([g for g in range(1, 1001) if g % 97 == 0])
    statements = log.on(TABLE)
    # live count and expired backlog of the app, the deployment's backlog, the erasure
    assert len(statements) == 4, [s for s, _ in statements]
    if settings.is_sqlite:
        plans = _sqlite_plans(settings, statements)
        scans = [p for p in plans if _sqlite_table_scans(p)]
    else:
        plans = await _postgres_plans(settings, statements)
        scans = [p for p in plans if "Seq Scan" in p]
    assert all(plans) and scans == [], "\n\n".join(plans)
