"""The one registry of task types. Adding one: write tasks/<name>.py with a `TASK`, add a line.

Each module exposes `TASK = TaskType(name, context model, async run(ctx, deps) -> dict)`.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from stateless.bots.tasks.base import TaskType

TASK_MODULES: list[str] = [
    "stateless.bots.tasks.email",
    "stateless.bots.tasks.email_campaign",
    "stateless.bots.tasks.webhook",
    "stateless.bots.tasks.social_post",
    "stateless.bots.tasks.data_export",
    "stateless.bots.tasks.report_generation",
    "stateless.bots.tasks.push",
]


@cache
def registry() -> dict[str, TaskType[Any]]:
    """task_type -> TaskType, imported on first use (nothing built at import time)."""
    tasks: dict[str, TaskType[Any]] = {}
    for name in TASK_MODULES:
        task: TaskType[Any] = importlib.import_module(name).TASK
        tasks[task.name] = task
    return tasks
