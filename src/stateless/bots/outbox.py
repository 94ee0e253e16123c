"""Queue a bot task inside the caller's own transaction (a transactional outbox): the task row
commits with the change that caused it, or not at all. The worker picks it up after commit."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.bots.repository import BotTaskRepository
from stateless.bots.runner import CONTEXT_PURPOSE
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.context import TenantContext
from stateless.kit.data.db import utcnow
from stateless.lifecycle.policy import TtlPolicy


@dataclass(frozen=True)
class QueuedTask:
    task_id: str
    expires_at: datetime


async def queue_task(
    session: AsyncSession,
    tenant: TenantContext,
    *,
    kit: PrivacyKit,
    policy: TtlPolicy,
    task_type: str,
    context: dict[str, Any],
) -> QueuedTask:
    """Insert a queued task (its context sealed, as every queued context is)."""
    now = utcnow()
    task_id = secrets.token_hex(16)
    expires_at = policy.expires_at("bot_tasks", None, now)
    sealed = kit.encrypt_text(CONTEXT_PURPOSE, tenant.app_id, orjson.dumps(context).decode())
    await BotTaskRepository(session, tenant).insert(
        {
            "task_id": task_id,
            "task_type": task_type,
            "mode": "async",
            "status": "queued",
            "context_sealed": sealed,
            "base_url": "",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "expires_at": expires_at,
        }
    )
    return QueuedTask(task_id, expires_at)


async def enqueue_task(
    session: AsyncSession,
    tenant: TenantContext,
    *,
    kit: PrivacyKit,
    policy: TtlPolicy,
    task_type: str,
    context: dict[str, Any],
) -> str:
    """Insert a queued task (its context sealed, as every queued context is); its id."""
    queued = await queue_task(
        session, tenant, kit=kit, policy=policy, task_type=task_type, context=context
    )
    return queued.task_id
