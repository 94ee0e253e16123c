"""Broadcasts over HTTP against the local APNs peer: 202 and live progress, a worker killed
mid-way and another resuming (no device skipped, at most one page repeated), cancel, another
tenant's small push meanwhile, and the 4xx that comes before anything is queued."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from stateless.config import Settings
from tests.bots.broadcasts import drain, worker_of
from tests.conftest import Client, TenantFactory, TenantHandle
from tests.ios.conftest import BUNDLE_ID, HIGH_LIMITS, KEY_ID, TEAM_ID, ApnsKey, hex_token
from tests.peers.apns import ApnsPeer
from tests.support import sql
from tests.test_core import assert_problem

REGISTER = "/api/v1/ios/register-token"
PUSH = "/api/v1/ios/push"
PAGE = 500  # ios.service.PUSH_BATCH_SIZE


async def register_many(client: Client, tenant: TenantHandle, n: int, prefix: str) -> list[str]:
    tokens = [hex_token(i, prefix) for i in range(n)]
    for i, token in enumerate(tokens):
        r = await client.post(
            REGISTER, headers=tenant.pk, json={"token": token, "device_id": f"{prefix}-{i}"}
        )
        assert r.status_code == 200, r.text
    return tokens


async def task_of(client: Client, tenant: TenantHandle, task_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/bots/tasks/{task_id}", headers=tenant.sk)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_until(
    client: Client, tenant: TenantHandle, task_id: str, sent_at_least: int
) -> dict[str, Any]:
    """Poll the task until its recorded progress reaches `sent_at_least` (generous bound)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task = await task_of(client, tenant, task_id)
        if task["progress"] and task["progress"]["sent"] >= sent_at_least:
            return task
        await asyncio.sleep(0.01)
    raise AssertionError(f"no progress: {task}")


async def start(client: Client, tenant: TenantHandle) -> asyncio.Task[None]:
    """A worker claiming the queued broadcast and running it, in a task we can kill."""
    worker = worker_of(client)
    [item] = await worker.claim()
    return asyncio.create_task(worker.process(item))


async def queue_all(client: Client, tenant: TenantHandle) -> str:
    r = await client.post(PUSH, headers=tenant.sk, json={"all": True, "badge": 1})
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"status", "task_id", "task_type", "tenant", "ephemeral", "expires_at"}
    assert body["status"] == "queued" and body["tenant"] == tenant.app_id
    task_id: str = body["task_id"]
    return task_id


async def test_killed_worker_resumes_with_no_device_skipped(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer, settings: Settings
) -> None:
    tokens = await register_many(ios_client, ios_tenant, 1300, "c")
    apns_peer.delay_seconds = 0.03  # a page is on the wire long enough to be killed mid-way
    task_id = await queue_all(ios_client, ios_tenant)
    assert (await task_of(ios_client, ios_tenant, task_id))["status"] == "queued"
    running = await start(ios_client, ios_tenant)
    seen = await wait_until(ios_client, ios_tenant, task_id, PAGE)
    assert seen["status"] == "running" and seen["progress"]["total"] == 1300
    running.cancel()  # the worker dies: its lease stays until it runs out
    with contextlib.suppress(asyncio.CancelledError):
        await running
    delivered_before = len(apns_peer.received)
    assert delivered_before < 1300
    past = "datetime('now', '-1 minutes')" if settings.is_sqlite else "now() - interval '1 minute'"
    await sql(settings, f"UPDATE bot_tasks SET lease_expires_at = {past}")
    apns_peer.delay_seconds = 0.0
    await drain(ios_client)  # the next worker
    task = await task_of(ios_client, ios_tenant, task_id)
    assert task["status"] == "success" and task["attempts"] == 2, task
    assert task["progress"] == {"sent": 1300, "failed": 0, "removed": 0, "total": 1300}
    per_token = {token: apns_peer.delivered(token) for token in tokens}
    assert min(per_token.values()) == 1  # nobody skipped
    repeated = sum(n - 1 for n in per_token.values())
    assert repeated <= PAGE  # at most the page in flight
    assert max(per_token.values()) <= 2


async def test_cancel_a_queued_and_a_running_broadcast(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer, make_tenant: TenantFactory
) -> None:
    await register_many(ios_client, ios_tenant, 2500, "d")  # five pages: the cancel lands mid-way
    queued = await queue_all(ios_client, ios_tenant)
    r = await ios_client.delete(f"/api/v1/bots/tasks/{queued}", headers=ios_tenant.sk)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    r = await ios_client.delete(f"/api/v1/bots/tasks/{queued}", headers=ios_tenant.sk)
    assert r.status_code == 200  # again: the same answer
    assert await worker_of(ios_client).claim() == []  # never runs
    other = await make_tenant("app-other")
    assert_problem(
        await ios_client.delete(f"/api/v1/bots/tasks/{queued}", headers=other.sk),
        404,
        "task_not_found",
    )

    apns_peer.delay_seconds = 0.03
    task_id = await queue_all(ios_client, ios_tenant)
    running = await start(ios_client, ios_tenant)
    await wait_until(ios_client, ios_tenant, task_id, PAGE)
    r = await ios_client.delete(f"/api/v1/bots/tasks/{task_id}", headers=ios_tenant.sk)
    assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
    await asyncio.wait_for(running, 60)
    task = await task_of(ios_client, ios_tenant, task_id)
    assert task["status"] == "cancelled" and task["finished_at"] is not None, task
    progress = task["progress"]
    assert PAGE <= progress["sent"] < 2500 and progress["total"] == 2500
    # what was on the wire when the cancel was noticed is counted, nothing is sent after it
    assert len(apns_peer.received) == progress["sent"]
    assert task["result"]["sent"] == progress["sent"]
    assert_problem(
        await ios_client.delete(f"/api/v1/bots/tasks/{task_id}x", headers=ios_tenant.sk),
        404,
        "task_not_found",
    )


async def test_another_tenants_small_push_is_not_held_behind_a_broadcast(
    ios_client: Client,
    ios_tenant: TenantHandle,
    apns_peer: ApnsPeer,
    make_tenant: TenantFactory,
    apns_key: ApnsKey,
) -> None:
    await register_many(ios_client, ios_tenant, 1500, "e")
    other = await make_tenant(
        "app-small",
        bundle_id="com.example.other",
        apns_team_id=TEAM_ID,
        apns_key_id=KEY_ID,
        apns_key_p8=apns_key.private_pem,
        rate_limits=HIGH_LIMITS,
    )
    small = await register_many(ios_client, other, 3, "f")
    apns_peer.delay_seconds = 0.02
    task_id = await queue_all(ios_client, ios_tenant)
    running = await start(ios_client, ios_tenant)
    await wait_until(ios_client, ios_tenant, task_id, 1)
    timeout = ios_client.app.state.container.settings.bot_timeout_seconds
    r = await asyncio.wait_for(
        ios_client.post(
            PUSH, headers=other.sk, json={"device_ids": ["f-0", "f-1", "f-2"], "badge": 1}
        ),
        timeout,
    )
    assert r.status_code == 200 and r.json()["sent"] == 3, r.text
    assert (await task_of(ios_client, ios_tenant, task_id))["status"] == "running"
    assert {x.token for x in apns_peer.received if x.topic == "com.example.other"} == set(small)
    cap = ios_client.app.state.container.settings.apns_tenant_max_concurrency
    assert apns_peer.max_in_flight[BUNDLE_ID] <= cap
    await asyncio.wait_for(running, 60)
    task = await task_of(ios_client, ios_tenant, task_id)
    assert task["status"] == "success" and task["progress"]["sent"] == 1500


async def test_a_broadcast_that_cannot_start_is_refused_before_queueing(
    ios_client: Client, make_tenant: TenantFactory, settings: Settings
) -> None:
    bare = await make_tenant("app-bare", bundle_id=BUNDLE_ID)
    r = await ios_client.post(PUSH, headers=bare.sk, json={"all": True, "badge": 1})
    assert_problem(r, 409, "apns_not_configured")
    ids = [f"x-{i}" for i in range(1001)]  # more than PUSH_SYNC_MAX: a broadcast too
    r = await ios_client.post(PUSH, headers=bare.sk, json={"device_ids": ids, "badge": 1})
    assert_problem(r, 409, "apns_not_configured")
    assert await sql(settings, "SELECT count(*) FROM bot_tasks") == [(0,)]


async def test_more_ids_than_push_sync_max_is_a_broadcast_of_those_ids(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer
) -> None:
    tokens = await register_many(ios_client, ios_tenant, 1100, "b")
    listed = [f"b-{i}" for i in range(1050)] + ["unknown-1", "unknown-2"]
    r = await ios_client.post(PUSH, headers=ios_tenant.sk, json={"device_ids": listed, "badge": 1})
    assert r.status_code == 202, r.text
    await drain(ios_client)
    task = await task_of(ios_client, ios_tenant, r.json()["task_id"])
    assert task["status"] == "success", task
    assert task["progress"] == {"sent": 1050, "failed": 2, "removed": 0, "total": 1052}
    assert {x.token for x in apns_peer.received} == set(tokens[:1050])
