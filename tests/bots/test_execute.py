"""POST /bots/execute and GET /bots/tasks/{id}: validation, limits, idempotency, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from stateless.config import Settings
from tests.bots.conftest import EXECUTE, SENDGRID_KEY, configure, execute
from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.peers.sendgrid import running_sendgrid
from tests.peers.webhook import Answer, running_webhook_receiver
from tests.support import count_rows, expire_rows
from tests.test_core import assert_problem


async def test_email_to_the_notify_address_with_only_a_subject(
    capsys: pytest.CaptureFixture[str], make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    # the app is built during the test so its log handler writes into capsys
    client = await make_client()
    tenant = await make_tenant("mailer", notify_email="owner@example.com")
    r = await execute(client, tenant, "email", {"subject": "Test"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success"
    assert body["task_type"] == "email" and body["tenant"] == "mailer"
    assert body["ephemeral"] is True and body["expires_at"].endswith("Z")
    assert body["result"]["provider"] == "console"
    assert body["result"]["recipients"] == 1
    assert body["result"]["message_id"].startswith("console-")
    out = capsys.readouterr().out
    assert "email_sent_console" in out and "owner@example.com" not in out

    task = await client.get(f"/api/v1/bots/tasks/{body['task_id']}", headers=tenant.sk)
    assert task.status_code == 200
    assert task.json()["status"] == "success"
    assert task.json()["result"] == body["result"]
    assert task.json()["mode"] == "sync"


async def test_email_without_any_address_is_422(client: Client, tenant: TenantHandle) -> None:
    r = await execute(client, tenant, "email", {"subject": "Test"})
    assert_problem(r, 422, "no_recipient")


async def test_unknown_task_type_lists_the_allowed_ones(
    client: Client, tenant: TenantHandle
) -> None:
    r = await execute(client, tenant, "launch_rocket", {})
    body = assert_problem(r, 400, "unknown_task_type")
    assert {"email", "email_campaign", "webhook", "social_post"} <= set(body["allowed"])
    for name in body["allowed"]:
        assert name in body["detail"]


async def test_context_that_does_not_fit_is_422_with_errors(
    client: Client, tenant: TenantHandle
) -> None:
    r = await execute(client, tenant, "email", {"to": "not-an-address", "html": 5})
    body = assert_problem(r, 422, "validation_error")
    locs = {tuple(e["loc"]) for e in body["errors"]}
    assert ("body", "context", "subject") in locs
    assert ("body", "context", "html") in locs
    assert "not-an-address" not in r.text  # values are never echoed
    r = await execute(client, tenant, "email", {"subject": "x", "bcc": "a@example.com"})
    assert_problem(r, 422, "validation_error")


async def test_context_over_one_mebibyte_is_413(client: Client, tenant: TenantHandle) -> None:
    big = "x" * (1024 * 1024 + 10)
    r = await execute(client, tenant, "email", {"subject": "big", "text": big})
    assert_problem(r, 413, "context_too_large")


async def test_secret_key_required(client: Client, tenant: TenantHandle) -> None:
    r = await client.post(
        EXECUTE, headers=tenant.pk, json={"task_type": "email", "context": {"subject": "x"}}
    )
    assert_problem(r, 403, "insufficient_scope")


async def test_ttl_above_seven_days_is_422(client: Client, tenant: TenantHandle) -> None:
    r = await execute(
        client, tenant, "email", {"subject": "x", "to": "a@example.com"}, ttl_seconds=8 * 86400
    )
    assert_problem(r, 422, "ttl_out_of_range")


async def test_thirty_first_call_in_a_minute_is_429(client: Client, tenant: TenantHandle) -> None:
    for i in range(30):
        r = await execute(client, tenant, "email", {"subject": f"n{i}", "to": "a@example.com"})
        assert r.status_code == 200, (i, r.text)
        assert r.headers["ratelimit-policy"] == '"bots.execute";q=30;w=60'
    r = await execute(client, tenant, "email", {"subject": "one too many", "to": "a@example.com"})
    assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 60


async def test_tasks_of_other_apps_and_expired_tasks_are_404(
    client: Client, tenant: TenantHandle, other_tenant: TenantHandle, settings: Settings
) -> None:
    r = await execute(client, tenant, "email", {"subject": "x", "to": "a@example.com"})
    task_id = r.json()["task_id"]
    other = await client.get(f"/api/v1/bots/tasks/{task_id}", headers=other_tenant.sk)
    never = await client.get("/api/v1/bots/tasks/0123456789abcdef", headers=tenant.sk)
    assert_problem(other, 404, "task_not_found")
    assert_problem(never, 404, "task_not_found")
    assert other.json()["detail"].replace(task_id, "ID") == never.json()["detail"].replace(
        "0123456789abcdef", "ID"
    )
    await expire_rows(settings, "bot_tasks")
    gone = await client.get(f"/api/v1/bots/tasks/{task_id}", headers=tenant.sk)
    assert_problem(gone, 404, "task_not_found")
    cleaned = await client.post("/api/v1/admin/cleanup", headers=tenant.sk)
    assert cleaned.json()["deleted"]["bot_tasks"] == 1
    assert await count_rows(settings, "bot_tasks") == 0


async def test_task_ttl_sets_the_record_expiry(client: Client, tenant: TenantHandle) -> None:
    r = await execute(
        client, tenant, "email", {"subject": "x", "to": "a@example.com"}, ttl_seconds=120
    )
    task = (await client.get(f"/api/v1/bots/tasks/{r.json()['task_id']}", headers=tenant.sk)).json()
    from datetime import datetime

    created = datetime.fromisoformat(task["created_at"])
    expires = datetime.fromisoformat(task["expires_at"])
    assert 119 <= (expires - created).total_seconds() <= 121


async def test_idempotency_key_replays_the_first_answer_and_sends_once(
    make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        context = {"to": "buyer@example.com", "subject": "Your receipt"}
        key = {"Idempotency-Key": "order-4711-receipt"}
        first = await execute(client, tenant, "email", context, headers=key)
        second = await execute(client, tenant, "email", context, headers=key)
        assert first.status_code == second.status_code == 200
        assert first.json() == second.json()
        assert second.headers["idempotent-replayed"] == "true"
        assert len(peer.requests) == 1
        assert await count_rows(settings, "bot_tasks") == 1

        other = await execute(client, tenant, "email", {**context, "subject": "Other"}, headers=key)
        assert_problem(other, 409, "idempotency_key_reused")
        assert len(peer.requests) == 1

        # the same key is another app's own key
        async_first = await execute(
            client, tenant, "email", context, headers={"Idempotency-Key": "k2"}, mode="async"
        )
        async_again = await execute(
            client, tenant, "email", context, headers={"Idempotency-Key": "k2"}, mode="async"
        )
        assert async_first.status_code == async_again.status_code == 202
        assert async_first.json()["task_id"] == async_again.json()["task_id"]
        assert await count_rows(settings, "bot_idempotency") == 2


async def test_idempotency_replays_provider_failures_too(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    from tests.peers.sendgrid import sendgrid_error

    with running_sendgrid(
        SENDGRID_KEY, sendgrid_error(400, "personalizations.0.to", "Invalid")
    ) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        key = {"Idempotency-Key": "k-fail"}
        ctx = {"to": "x@example.com", "subject": "s"}
        first = await execute(client, tenant, "email", ctx, headers=key)
        second = await execute(client, tenant, "email", ctx, headers=key)
        assert_problem(first, 502, "provider_error")
        assert_problem(second, 502, "provider_error")
        assert first.json()["detail"] == second.json()["detail"]
        assert len(peer.requests) == 1


async def test_sync_task_over_the_timeout_is_504_and_recorded(
    make_client: ClientFactory, make_tenant: TenantFactory, settings: Settings
) -> None:
    with running_webhook_receiver(Answer(200, delay_seconds=3.0)) as receiver:
        client = await make_client(bot_timeout_seconds=0.5, webhook_allow_private_networks=True)
        tenant = await make_tenant("slow", webhook_url=receiver.url)
        started = asyncio.get_running_loop().time()
        r = await execute(client, tenant, "webhook", {"data": {"n": 1}})
        elapsed = asyncio.get_running_loop().time() - started
        body = assert_problem(r, 504, "task_timeout")
        assert "0.5" in body["detail"]
        assert elapsed < 2.5
        rows = await count_rows(settings, "bot_tasks", "status = 'timeout'")
        assert rows == 1
        # the record says so too
        from tests.support import sql

        task_id = (await sql(settings, "SELECT task_id FROM bot_tasks"))[0][0]
        task = await client.get(f"/api/v1/bots/tasks/{task_id}", headers=tenant.sk)
        assert task.json()["status"] == "timeout"
        assert task.json()["error"]["code"] == "task_timeout"


async def test_configuration_change_is_seen(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    assert_problem(await execute(client, tenant, "email", {"subject": "x"}), 422, "no_recipient")
    await configure(settings, client, tenant.app_id, notify_email="ops@example.com")
    assert (await execute(client, tenant, "email", {"subject": "x"})).status_code == 200
