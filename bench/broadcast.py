"""A push to `all` is a broadcast job (SPEC 5): the push benches queue it, then wait for the
task to finish and read its counts, so they measure the whole broadcast."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

POLL_SECONDS = 0.05


async def broadcast(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    """POST the broadcast (202), then poll its task until it ends; the task's final result."""
    queued = await client.post(path, headers=headers, json=body)
    assert queued.status_code == 202, queued.text[:300]
    task_id = queued.json()["task_id"]
    while True:
        task = (await client.get(f"/api/v1/bots/tasks/{task_id}", headers=headers)).json()
        if task["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(POLL_SECONDS)
    assert task["status"] == "success", str(task)[:300]
    return dict(task["result"])
