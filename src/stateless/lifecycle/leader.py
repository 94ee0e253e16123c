"""Exactly one process leads background work: a Postgres session advisory lock, held on a
dedicated connection. If the leader dies its connection closes and the lock frees at once;
followers retry every interval, so one takes over within two intervals. SQLite is in-process."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger("stateless.leader")

# An arbitrary constant shared by every replica: "stateless" cleanup leadership.
LEADER_LOCK_KEY = 0x5747_1E55


class Leadership:
    def __init__(self, engine: AsyncEngine, *, is_sqlite: bool, lock_key: int = LEADER_LOCK_KEY):
        self.engine = engine
        self.is_sqlite = is_sqlite
        self.lock_key = lock_key
        self._conn: AsyncConnection | None = None
        # Cleanup and the storage sweep share one lock: never open two lock connections at once.
        self._guard = asyncio.Lock()

    @property
    def is_leader(self) -> bool:
        return self.is_sqlite or self._conn is not None

    async def try_lead(self) -> bool:
        """Keep leadership if the lock connection is alive, else try to take it."""
        if self.is_sqlite:
            return True
        async with self._guard:
            return await self._try_lead()

    async def _try_lead(self) -> bool:
        if self._conn is not None:
            try:
                await self._conn.execute(text("SELECT 1"))
                return True
            except Exception as exc:  # the lock went with the connection
                log.warning("leadership_lost", error_type=type(exc).__name__)
                await self._drop()
        conn = await self.engine.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = (
                await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.lock_key})
            ).scalar_one()
        except BaseException:
            await conn.close()
            raise
        if got:
            self._conn = conn
            log.info("leadership_acquired")
            return True
        await conn.close()
        return False

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.invalidate()
            except Exception as exc:  # already broken; nothing more to release
                log.debug("leadership_drop_failed", error_type=type(exc).__name__)

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.lock_key})
        except Exception as exc:  # closing the connection frees the lock anyway
            log.debug("leadership_unlock_failed", error_type=type(exc).__name__)
        finally:
            await conn.close()
