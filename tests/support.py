"""Test helpers that act on the database directly (the clock of expiry, row counts)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from stateless.config import Settings


async def sql(settings: Settings, statement: str, **params: Any) -> list[Any]:
    """Run one statement on the test database; returns rows for SELECTs."""
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.fetchall()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def expire_rows(settings: Settings, table: str, where: str = "1=1", **params: Any) -> None:
    """Move rows' expiry into the past, as the passage of time would."""
    past = "datetime('now', '-1 minute')" if settings.is_sqlite else "now() - interval '1 minute'"
    await sql(settings, f"UPDATE {table} SET expires_at = {past} WHERE {where}", **params)


async def count_rows(settings: Settings, table: str, where: str = "1=1", **params: Any) -> int:
    rows = await sql(settings, f"SELECT count(*) FROM {table} WHERE {where}", **params)
    return int(rows[0][0])
