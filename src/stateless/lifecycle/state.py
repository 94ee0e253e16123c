"""The state background work shares with requests: built with the container, so nothing is
registered into it at runtime."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stateless.lifecycle.leader import Leadership


@dataclass
class SchedulerState:
    is_running: bool = False
    last_run_time: datetime | None = None
    last_run_status: str | None = None
    run_count: int = 0
    error_count: int = 0
    started_at: datetime | None = None
    next_run: datetime | None = None
    is_leader: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "is_running": self.is_running,
            "last_run_time": self.last_run_time,
            "last_run_status": self.last_run_status,
            "run_count": self.run_count,
            "error_count": self.error_count,
            "started_at": self.started_at,
            "next_run": self.next_run,
            "is_leader": self.is_leader,
        }


@dataclass
class BackgroundState:
    """What this process's background work shares: one leader lock (cleanup and the storage
    sweep run where it is held), the cleanup scheduler's state (admin status reads it) and the
    signal that wakes the task worker after a queueing."""

    leadership: Leadership
    cleanup: SchedulerState = field(default_factory=SchedulerState)
    # True while this process runs the background loops (RUN_BACKGROUND_JOBS or the worker).
    enabled: bool = False
    task_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
