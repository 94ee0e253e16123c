"""A resumable task's journal: its cursor and counts, written on the task row after every page.

The write also renews the worker's lease, and it is guarded by the attempt number and by status
`running`: a task cancelled meanwhile (DELETE /tasks/{id}) or taken over by another worker
(lease expired) stops its run at that page boundary.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.bots.repository import BotTaskRepository
from stateless.kit.data.db import session_scope, utcnow
from stateless.tenants.schemas import VerifiedAppId

COUNTS = ("sent", "failed", "removed", "total")


class TaskStopped(Exception):
    """The run must stop at this page boundary (nothing is wrong with the task itself)."""


class TaskCancelled(TaskStopped):
    """DELETE /tasks/{id} cancelled the task while it ran."""


class TaskLost(TaskStopped):
    """Another worker re-claimed the task (our lease had run out): it owns the row now."""


def progress_counts(progress: dict[str, Any] | None) -> dict[str, int] | None:
    """sent, failed, removed and total, summed over the channels of a journal."""
    if not progress:
        return None
    channels = [v for v in progress.values() if isinstance(v, dict)]
    return {name: sum(int(c.get(name, 0)) for c in channels) for name in COUNTS}


class TaskJournal:
    """Progress of one claimed run: `saved` is what the last run recorded (or {})."""

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        app_id: VerifiedAppId,
        task_id: str,
        attempts: int,
        lease_seconds: float,
        saved: dict[str, Any],
    ) -> None:
        self.maker = maker
        self.app_id = app_id
        self.task_id = task_id
        self.attempts = attempts
        self.lease_seconds = lease_seconds
        self.saved = saved

    async def record(self, progress: dict[str, Any]) -> None:
        """Write the journal and renew the lease; TaskCancelled or TaskLost when the row is no
        longer this run's."""
        now = utcnow()
        values = {
            "progress_json": orjson.dumps(progress).decode(),
            "lease_expires_at": now + timedelta(seconds=self.lease_seconds),
        }
        async with session_scope(self.maker) as session:
            repo = BotTaskRepository(session, self.app_id)
            written = await repo.finish(
                self.task_id, values, attempts=self.attempts, status="running"
            )
            cancelled = not written and await repo.finish(
                self.task_id,
                {"progress_json": values["progress_json"]},  # the page that was sent counts
                attempts=self.attempts,
                status="cancelled",
            )
        if not written and not cancelled:
            raise TaskLost
        self.saved = progress
        if cancelled:
            raise TaskCancelled

    async def amend_cancelled(self, progress: dict[str, Any]) -> None:
        """The last counts of a cancelled run (what its in-flight sends did after the cancel was
        noticed); written only while the row is still this attempt's and cancelled."""
        async with session_scope(self.maker) as session:
            repo = BotTaskRepository(session, self.app_id)
            if await repo.finish(
                self.task_id,
                {"progress_json": orjson.dumps(progress).decode()},
                attempts=self.attempts,
                status="cancelled",
            ):
                self.saved = progress
