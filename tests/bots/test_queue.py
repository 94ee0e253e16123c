"""Async tasks: durable in the database, run by the background worker, retried with backoff,
re-run when their worker died, and survived across an app restart."""

from __future__ import annotations

from stateless.config import Settings
from tests.bots.conftest import SENDGRID_KEY, execute, wait_for_task
from tests.conftest import ClientFactory, TenantFactory, TenantHandle
from tests.peers.sendgrid import running_sendgrid, sendgrid_error
from tests.peers.webhook import Answer
from tests.support import sql

CONTEXT = {"to": "queued@example.com", "subject": "Later"}


async def test_async_task_runs_in_the_background(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        client = await make_client(
            run_background_jobs=True,
            sendgrid_api_key=SENDGRID_KEY,
            sendgrid_api_base_url=peer.base_url,
        )
        r = await execute(client, tenant, "email", CONTEXT, mode="async")
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["status"] == "queued" and accepted["ephemeral"] is True
        assert "result" not in accepted
        task = await wait_for_task(client, tenant, accepted["task_id"])
        assert task["status"] == "success" and task["mode"] == "async"
        assert task["result"]["message_id"] == peer.message_ids[0]
        assert task["attempts"] == 1 and task["error"] is None
        assert len(peer.requests) == 1
        # the sealed context (with the address) is dropped once the task has run
        rows = await sql(settings, "SELECT context_sealed FROM bot_tasks")
        assert rows == [(None,)]


async def test_queued_task_survives_a_restart_and_runs_on_the_worker(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        web = await make_client(
            run_background_jobs=False,
            sendgrid_api_key=SENDGRID_KEY,
            sendgrid_api_base_url=peer.base_url,
        )
        r = await execute(web, tenant, "email", CONTEXT, mode="async")
        task_id = r.json()["task_id"]
        queued = await web.get(f"/api/v1/bots/tasks/{task_id}", headers=tenant.sk)
        assert queued.json()["status"] == "queued"
        assert peer.requests == []
        worker = await make_client(
            run_background_jobs=True,
            sendgrid_api_key=SENDGRID_KEY,
            sendgrid_api_base_url=peer.base_url,
        )
        task = await wait_for_task(worker, tenant, task_id)
        assert task["status"] == "success"
        assert len(peer.requests) == 1
        seen_by_web = await web.get(f"/api/v1/bots/tasks/{task_id}", headers=tenant.sk)
        assert seen_by_web.json()["status"] == "success"


async def test_running_task_with_an_expired_lease_is_run_again(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        web = await make_client(sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url)
        r = await execute(web, tenant, "email", CONTEXT, mode="async")
        task_id = r.json()["task_id"]
        # a worker claimed it and died: running, one attempt used, lease run out
        past = (
            "datetime('now', '-5 minutes')"
            if settings.is_sqlite
            else "now() - interval '5 minutes'"
        )
        await sql(
            settings,
            f"UPDATE bot_tasks SET status = 'running', attempts = 1, lease_expires_at = {past}",
        )
        running = await web.get(f"/api/v1/bots/tasks/{task_id}", headers=tenant.sk)
        assert running.json()["status"] == "running"
        worker = await make_client(
            run_background_jobs=True,
            sendgrid_api_key=SENDGRID_KEY,
            sendgrid_api_base_url=peer.base_url,
        )
        task = await wait_for_task(worker, tenant, task_id)
        assert task["status"] == "success" and task["attempts"] == 2
        assert len(peer.requests) == 1


async def test_running_task_with_a_live_lease_is_left_alone(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        web = await make_client(sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url)
        r = await execute(web, tenant, "email", CONTEXT, mode="async")
        task_id = r.json()["task_id"]
        future = (
            "datetime('now', '+5 minutes')"
            if settings.is_sqlite
            else "now() + interval '5 minutes'"
        )
        await sql(
            settings,
            f"UPDATE bot_tasks SET status = 'running', attempts = 1, lease_expires_at = {future}",
        )
        worker = await make_client(
            run_background_jobs=True,
            bot_poll_interval_seconds=0.05,
            sendgrid_api_key=SENDGRID_KEY,
            sendgrid_api_base_url=peer.base_url,
        )
        import asyncio

        await asyncio.sleep(0.5)
        task = (await worker.get(f"/api/v1/bots/tasks/{task_id}", headers=tenant.sk)).json()
        assert task["status"] == "running" and peer.requests == []


async def test_transient_failures_are_retried_with_backoff_then_succeed(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    # three 500s exhaust one run's bounded retries; the queue retries the task later
    with running_sendgrid(SENDGRID_KEY, Answer(500), Answer(500), Answer(500)) as peer:
        client = await make_client(
            run_background_jobs=True,
            bot_retry_base_seconds=0.3,
            sendgrid_api_key=SENDGRID_KEY,
            sendgrid_api_base_url=peer.base_url,
        )
        r = await execute(client, tenant, "email", CONTEXT, mode="async")
        task_id = r.json()["task_id"]
        retrying = await wait_for_task(client, tenant, task_id, statuses=("queued",))
        task = await wait_for_task(client, tenant, task_id)
        assert task["status"] == "success" and task["attempts"] == 2
        assert len(peer.requests) == 4 and len(peer.accepted) == 1
        assert retrying["status"] == "queued"


async def test_permanent_failure_and_exhausted_attempts_fail_the_task(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    with running_sendgrid(
        SENDGRID_KEY, sendgrid_error(400, "subject", "bad"), *[Answer(500)] * 6
    ) as peer:
        client = await make_client(
            run_background_jobs=True,
            bot_retry_base_seconds=0.05,
            bot_max_attempts=2,
            sendgrid_api_key=SENDGRID_KEY,
            sendgrid_api_base_url=peer.base_url,
        )
        r = await execute(client, tenant, "email", CONTEXT, mode="async")
        task = await wait_for_task(client, tenant, r.json()["task_id"])
        assert task["status"] == "failed" and task["attempts"] == 1
        assert task["error"]["code"] == "provider_error"
        assert "queued@example.com" not in str(task)
        r = await execute(client, tenant, "email", CONTEXT, mode="async")
        task = await wait_for_task(client, tenant, r.json()["task_id"])
        assert task["status"] == "failed" and task["attempts"] == 2
        assert len(peer.requests) == 7


async def test_two_workers_run_each_task_exactly_once(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        settings_for_mail = {
            "sendgrid_api_key": SENDGRID_KEY,
            "sendgrid_api_base_url": peer.base_url,
        }
        web = await make_client(**settings_for_mail)
        task_ids = []
        for i in range(20):
            r = await execute(
                web, tenant, "email", {"to": f"n{i}@example.com", "subject": "s"}, mode="async"
            )
            task_ids.append(r.json()["task_id"])
        workers = [
            await make_client(
                run_background_jobs=True, bot_poll_interval_seconds=0.05, **settings_for_mail
            )
            for _ in range(2)
        ]
        for i, task_id in enumerate(task_ids):
            task = await wait_for_task(workers[i % 2], tenant, task_id)
            assert task["status"] == "success" and task["attempts"] == 1
        assert len(peer.requests) == 20
        recipients = sorted(b["personalizations"][0]["to"][0]["email"] for b in peer.requests)
        assert recipients == sorted(f"n{i}@example.com" for i in range(20))


async def test_sync_task_of_a_dead_process_is_marked_interrupted(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    web = await make_client()
    r = await execute(web, tenant, "email", CONTEXT)
    task_id = r.json()["task_id"]
    past = "datetime('now', '-5 minutes')" if settings.is_sqlite else "now() - interval '5 minutes'"
    await sql(settings, f"UPDATE bot_tasks SET status = 'running', lease_expires_at = {past}")
    worker = await make_client(run_background_jobs=True)
    task = await wait_for_task(worker, tenant, task_id, statuses=("failed",))
    assert task["error"]["code"] == "interrupted"


async def test_concurrent_requests_with_one_idempotency_key_send_once(
    make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    import asyncio

    from tests.peers.webhook import running_webhook_receiver
    from tests.test_core import assert_problem

    with running_webhook_receiver(Answer(200, delay_seconds=0.5)) as receiver:
        client = await make_client(webhook_allow_private_networks=True)
        tenant = await make_tenant("hooks", webhook_url=receiver.url)
        key = {"Idempotency-Key": "evt-1"}
        first, second = await asyncio.gather(
            execute(client, tenant, "webhook", {"data": {"n": 1}}, headers=key),
            execute(client, tenant, "webhook", {"data": {"n": 1}}, headers=key),
        )
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 409], (first.text, second.text)
        loser = first if first.status_code == 409 else second
        assert_problem(loser, 409, "idempotency_in_progress")
        again = await execute(client, tenant, "webhook", {"data": {"n": 1}}, headers=key)
        assert again.status_code == 200
        assert len(receiver.received) == 1
