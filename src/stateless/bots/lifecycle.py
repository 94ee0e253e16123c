"""Task and idempotency records expire like any other data (kinds bot_tasks, idempotency)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stateless.bots.models import BotIdempotencyRecord, BotTask

if TYPE_CHECKING:
    from stateless.lifecycle.registry import LifecycleRegistry


def register(registry: LifecycleRegistry) -> None:
    registry.register("bot_tasks", BotTask)
    registry.register("idempotency", BotIdempotencyRecord)
