"""What the push benches share (bench.push runs bench.webpush's scenarios; neither imports the
other): a scenario and its result, and the broadcast itself. A push to `all` is a broadcast
job (SPEC 5): the benches queue it, then wait for the task to finish and read its counts, so
they measure the whole broadcast."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Scenario:
    """One measurement: `kind` of push ("apns"; Web Push adds its own), `path` ("app" or
    "client"), `engine` (the HTTP/2 library), `recipients` (notifications sent)."""

    kind: str
    path: str
    engine: str
    recipients: int


@dataclass(frozen=True)
class Result:
    scenario: Scenario
    seconds: float
    cpu_seconds: float  # this process (user + system) during the pushes
    peer_cpu_seconds: float  # the peer process during the same window
    rss_before_mb: float
    rss_peak_mb: float
    delivered: int
    peer_verified: str = ""  # what the peer checked in this run, when it says

    @property
    def pushes_per_second(self) -> float:
        return self.scenario.recipients / self.seconds

    @property
    def cpu_ms_per_push(self) -> float:
        return self.cpu_seconds * 1000 / self.scenario.recipients

    @property
    def peer_cpu_ms_per_push(self) -> float:
        return self.peer_cpu_seconds * 1000 / self.scenario.recipients


Runner = Callable[[Scenario], Result]


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
