"""Broadcast helpers: queue a push to `all` over HTTP, run the queued job on a worker built
from the app's own container (as the background job would), read the task back."""

from __future__ import annotations

import asyncio
from typing import Any

from stateless.bots.runner import TaskWorker
from stateless.bots.wiring import task_providers
from tests.conftest import Client


def worker_of(client: Client) -> TaskWorker:
    container = client.app.state.container
    return TaskWorker(task_providers(container), container.directory, asyncio.Event())


async def drain(client: Client) -> None:
    """Run every task that is due now, to its end (retries later than now stay queued)."""
    worker = worker_of(client)
    while items := await worker.claim():
        for item in items:
            await worker.process(item)


async def broadcast(
    client: Client, headers: dict[str, str], path: str, body: dict[str, Any]
) -> dict[str, Any]:
    """POST a broadcast (202), run it, and return the finished task (GET /bots/tasks/{id})."""
    r = await client.post(path, headers=headers, json=body)
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["status"] == "queued" and queued["task_type"] == "push", queued
    await drain(client)
    r = await client.get(f"/api/v1/bots/tasks/{queued['task_id']}", headers=headers)
    assert r.status_code == 200, r.text
    task: dict[str, Any] = r.json()
    return task


def counts(task: dict[str, Any]) -> dict[str, int]:
    """The finished broadcast's counts, shaped as a synchronous push answers them."""
    result = task["result"]
    assert task["status"] == "success", task
    assert task["progress"] == {k: result[k] for k in ("sent", "failed", "removed", "total")}
    return {k: result[k] for k in ("sent", "failed", "removed")}
