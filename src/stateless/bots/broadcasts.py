"""Queue a push as a broadcast: the push endpoints' 202, a `push` task the worker runs as a
resumable job (bots/tasks/push.py), its context sealed like every queued context."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.bots.outbox import queue_task
from stateless.bots.schemas import TaskQueued
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.context import TenantContext
from stateless.lifecycle.policy import TtlPolicy


class BroadcastQueue:
    """Queues on the request's session (one lone INSERT), then wakes this process's worker."""

    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        kit: PrivacyKit,
        policy: TtlPolicy,
        wakeup: asyncio.Event,
    ) -> None:
        self.session = session
        self.tenant = tenant
        self.kit = kit
        self.policy = policy
        self.wakeup = wakeup

    async def queue(self, target: Literal["ios", "web"], body: dict[str, Any]) -> JSONResponse:
        """202 {"status": "queued", "task_id", "task_type", "tenant", "expires_at"}."""
        queued = await queue_task(
            self.session,
            self.tenant,
            kit=self.kit,
            policy=self.policy,
            task_type="push",
            context={"target": target, **body},
        )
        self.wakeup.set()
        answer = TaskQueued(
            task_id=queued.task_id,
            task_type="push",
            tenant=self.tenant.app_id,
            expires_at=queued.expires_at,
        )
        return JSONResponse(answer.model_dump(mode="json"), status_code=202)
