"""Expiry of stored files: bodies are deleted before their rows, and a periodic sweep removes
bodies that lost their row (a crash between the two steps, an upload after a delete).

The sweep receives the providers it uses (the backend, the sessionmaker, the TTL policy), built
in `domains.py`, never the container.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.kit.data.db import session_scope, utcnow
from stateless.kit.runtime.background import Job
from stateless.storage.backends import StorageBackend, split_key
from stateless.storage.models import StoredFile
from stateless.storage.repository import StoredFileRepository
from stateless.tenants.schemas import VerifiedAppId

if TYPE_CHECKING:
    from stateless.lifecycle.policy import TtlPolicy
    from stateless.lifecycle.registry import LifecycleRegistry

log = structlog.get_logger("stateless.storage.lifecycle")

SWEEP_INTERVAL_SECONDS = 3600.0
SWEEP_FIRST_DELAY_SECONDS = 60.0
SWEEP_BATCH = 500


def register(registry: LifecycleRegistry, backend: StorageBackend) -> None:
    async def delete_bodies(rows: Sequence[Any]) -> None:
        """Runs before each cleanup batch's rows go; if it raises, the rows stay for a retry."""
        await backend.delete([row.storage_key for row in rows])

    registry.register("stored_files", StoredFile, before_delete=delete_bodies)


def orphan_min_age(policy: TtlPolicy) -> timedelta:
    """Older than any row may live (the policy's max for files) plus an hour of slack."""
    return timedelta(seconds=policy.rule("stored_files").max_seconds + 3600)


class OrphanSweep:
    """Deletes bodies that no live row points to, once they are older than any row may live."""

    def __init__(
        self,
        backend: StorageBackend,
        sessionmaker: async_sessionmaker[AsyncSession],
        policy: TtlPolicy,
    ) -> None:
        self.backend = backend
        self.sessionmaker = sessionmaker
        self.min_age = orphan_min_age(policy)

    async def sweep(self, min_age: timedelta | None = None) -> int:
        """Delete bodies older than `min_age` (default: the policy's) that no live row points
        to; returns how many."""
        cutoff: datetime = utcnow() - (min_age if min_age is not None else self.min_age)
        candidates: list[str] = []
        removed = 0
        async for info in self.backend.list_objects():
            if info.last_modified <= cutoff:
                candidates.append(info.key)
            if len(candidates) >= SWEEP_BATCH:
                removed += await self._remove_unowned(candidates)
                candidates = []
        if candidates:
            removed += await self._remove_unowned(candidates)
        if removed:
            log.info("storage_orphans_removed", count=removed)
        return removed

    async def _remove_unowned(self, keys: list[str]) -> int:
        by_tenant: dict[str, list[str]] = defaultdict(list)
        unowned: list[str] = []
        for key in keys:
            parts = split_key(key)
            if parts is None:  # not a key we issue (e.g. a crashed upload's temp file)
                unowned.append(key)
            else:
                by_tenant[parts[0]].append(key)
        async with session_scope(self.sessionmaker) as session:
            for app_id, tenant_keys in by_tenant.items():
                repo = StoredFileRepository(session, VerifiedAppId(app_id))
                live = await repo.live_keys(tenant_keys)
                unowned.extend(k for k in tenant_keys if k not in live)
        await self.backend.delete(unowned)
        return len(unowned)

    async def run(self, _stop: asyncio.Event) -> bool:
        await self.sweep()
        return False

    def job(self) -> Job:
        """Background job: sweep hourly, a minute after start, on the leading replica only."""
        return Job(
            "storage-sweep",
            self.run,
            interval_seconds=SWEEP_INTERVAL_SECONDS,
            first_delay_seconds=SWEEP_FIRST_DELAY_SECONDS,
            leader_only=True,
        )
