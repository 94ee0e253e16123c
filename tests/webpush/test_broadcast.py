"""Web Push broadcasts over HTTP against the local push service: 202, live progress, a killed
worker resumed by another (no subscriber skipped), and the 413 that comes before queueing."""

from __future__ import annotations

import asyncio
import contextlib

from stateless.config import Settings
from tests.bots.broadcasts import drain, worker_of
from tests.conftest import Client
from tests.peers.webpush import WebPushPeer
from tests.support import sql
from tests.test_core import assert_problem
from tests.webpush.conftest import PUSH, WebApp, subscribe


async def test_web_broadcast_resumes_after_a_killed_worker(
    web_client: Client, web_app: WebApp, push_service: WebPushPeer, settings: Settings
) -> None:
    ids = []
    for i in range(700):
        subscription = push_service.new_subscription()
        ids.append(subscription["endpoint"].rsplit("/", 1)[-1])
        await subscribe(web_client, web_app, f"reader-{i}", subscription)
    sk = web_app.tenant.sk
    r = await web_client.post(PUSH, headers=sk, json={"all": True, "data": {"n": 1}})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    worker = worker_of(web_client)
    [item] = await worker.claim()
    running = asyncio.create_task(worker.process(item))
    while True:  # the first page (500) is recorded
        task = (await web_client.get(f"/api/v1/bots/tasks/{task_id}", headers=sk)).json()
        if task["progress"] and task["progress"]["sent"] >= 500:
            break
        assert not running.done(), task
        await asyncio.sleep(0.01)
    assert task["progress"]["total"] == 700
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    past = "datetime('now', '-1 minutes')" if settings.is_sqlite else "now() - interval '1 minute'"
    await sql(settings, f"UPDATE bot_tasks SET lease_expires_at = {past}")
    await drain(web_client)
    task = (await web_client.get(f"/api/v1/bots/tasks/{task_id}", headers=sk)).json()
    assert task["status"] == "success", task
    assert task["progress"] == {"sent": 700, "failed": 0, "removed": 0, "total": 700}
    delivered = {i: push_service.delivered(i) for i in ids}
    assert min(delivered.values()) == 1
    assert sum(n - 1 for n in delivered.values()) <= 500


async def test_web_broadcast_too_large_is_413_before_queueing(
    web_client: Client, web_app: WebApp, settings: Settings
) -> None:
    r = await web_client.post(
        PUSH, headers=web_app.tenant.sk, json={"all": True, "data": {"blob": "x" * 4000}}
    )
    assert_problem(r, 413, "payload_too_large")
    assert await sql(settings, "SELECT count(*) FROM bot_tasks") == [(0,)]
