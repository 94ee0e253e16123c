"""`push`: the same notification as POST /api/v1/ios/push, run by the bots task runner.

The context is the push request body. The result is stored with the task record, so it keeps
counts and APNs failure reasons only, never device ids.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stateless.bots.tasks.base import TaskDeps, TaskFailed, TaskRejected, TaskType
from stateless.ios.schemas import PushIn
from stateless.ios.service import (
    ApnsNotConfigured,
    ApnsUnreachable,
    PushService,
    credentials_of,
)
from stateless.kit.db import session_scope


class NoApnsKey(TaskRejected):
    """Push as a task: a missing APNs key is a 422 of the task request (a 409 on /ios/push)."""

    code = "apns_not_configured"


async def prepare(ctx: PushIn, deps: TaskDeps) -> None:
    try:
        credentials_of(deps.providers.kit, deps.tenant)
    except ApnsNotConfigured as exc:
        raise NoApnsKey(exc.detail) from exc


async def run(ctx: PushIn, deps: TaskDeps) -> dict[str, Any]:
    providers = deps.providers
    try:
        # The task owns its transaction: dead tokens are deleted when the push is done.
        async with session_scope(deps.sessionmaker) as session:
            service = PushService(
                session, deps.tenant, providers.kit, providers.apns, providers.metrics
            )
            out = await service.push(ctx)
    except ApnsNotConfigured as exc:
        raise NoApnsKey(exc.detail) from exc
    except ApnsUnreachable as exc:
        raise TaskFailed("APNs could not be reached", transient=True) from exc
    reasons = Counter(r.reason or r.status for r in out.results if r.status != "sent")
    return {
        "sent": out.sent,
        "failed": out.failed,
        "removed": out.removed,
        "reasons": dict(sorted(reasons.items())),
    }


TASK = TaskType(
    name="push",
    context=PushIn,
    run=run,
    prepare=prepare,
    description="Send an APNs notification to listed devices or to all (as POST /ios/push).",
)
