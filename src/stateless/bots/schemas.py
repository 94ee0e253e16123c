"""Request and response bodies of the bots API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stateless.kit.wire.bounds import BoundedInput, FreeFormObject
from stateless.kit.wire.timestamps import Timestamp

MAX_CONTEXT_BYTES = 1024 * 1024
TaskStatus = Literal["queued", "running", "success", "failed", "timeout", "cancelled"]


class ExecuteIn(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(min_length=1, max_length=64, description="One of the task types.")
    context: FreeFormObject = Field(
        default_factory=dict,
        description="The task's input (schema per task type), at most 1 MiB and 32 levels deep.",
    )
    mode: Literal["sync", "async"] = Field(
        default="sync", description="sync waits for the result; async queues and answers 202."
    )
    ttl_seconds: int | None = Field(
        default=None, description="How long the task record lives (default 48 h, max 7 d)."
    )


class TaskAccepted(BaseModel):
    """The answer of /execute: a finished task (sync) or a queued one (async)."""

    status: Literal["success", "queued"]
    task_id: str
    task_type: str
    result: dict[str, Any] | None = None
    tenant: str
    ephemeral: bool = True
    expires_at: Timestamp


class TaskError(BaseModel):
    code: str
    detail: str


class TaskProgress(BaseModel):
    """A broadcast's counts so far (all channels): devices or subscribers sent to, failed,
    removed (dead tokens, gone subscriptions), out of `total` counted when it started."""

    sent: int
    failed: int
    removed: int
    total: int


class TaskQueued(BaseModel):
    """A push queued as a broadcast: poll GET /bots/tasks/{task_id}."""

    status: Literal["queued"] = "queued"
    task_id: str
    task_type: str
    tenant: str
    ephemeral: bool = True
    expires_at: Timestamp


class TaskOut(BaseModel):
    task_id: str
    task_type: str
    mode: Literal["sync", "async"]
    status: TaskStatus
    attempts: int
    progress: TaskProgress | None = Field(
        default=None, description="Broadcasts: live counts, written after every page."
    )
    result: dict[str, Any] | None = None
    error: TaskError | None = None
    created_at: Timestamp
    finished_at: Timestamp | None = None
    next_attempt_at: Timestamp | None = None
    expires_at: Timestamp
    tenant: str
    ephemeral: bool = True
