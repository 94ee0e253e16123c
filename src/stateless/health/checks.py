"""The dependency checks readiness and the admin health report share."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def dependency_checks(
    engine: AsyncEngine, redis: Redis | None, db_timeout_seconds: float
) -> dict[str, str]:
    """`ok` or `unavailable` for the database, and for Redis when one is configured."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(db_timeout_seconds), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # reported, not raised
        checks["database"] = "unavailable"
    if redis is not None:
        try:
            async with asyncio.timeout(1):
                await redis.ping()
            checks["redis"] = "ok"
        except Exception:  # reported, not raised
            checks["redis"] = "unavailable"
    return checks
