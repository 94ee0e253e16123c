"""Bots test helpers: tenant reconfiguration, secrets read back like the CLI, task polling."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from stateless.config import Settings
from stateless.tenants.service import ConfigureRequest, TenantService
from tests.conftest import Client, TenantHandle, run_tenant_service

EXECUTE = "/api/v1/bots/execute"
SENDGRID_KEY = "SG.test-key-0123456789abcdefghijklmnopqrstuvwxyz"


async def configure(settings: Settings, client: Client | None, app_id: str, **config: Any) -> None:
    """Change a tenant's configuration the way `stateless tenants configure` does."""

    async def action(service: TenantService) -> Any:
        return await service.configure(app_id, ConfigureRequest(**config))

    await run_tenant_service(settings, action)
    if client is not None:
        client.app.state.container.directory.invalidate()


async def tenant_webhook_secret(settings: Settings, app_id: str) -> str:
    async def action(service: TenantService) -> Any:
        tenant = await service.repo.get(app_id)
        assert tenant is not None
        return service.read_secrets(tenant).webhook_secret

    secret = await run_tenant_service(settings, action)
    assert isinstance(secret, str) and secret.startswith("whsec_")
    return secret


async def execute(
    client: Client,
    tenant: TenantHandle,
    task_type: str,
    context: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    return await client.post(
        EXECUTE,
        headers={**tenant.sk, **(headers or {})},
        json={"task_type": task_type, "context": context, **extra},
    )


async def wait_for_task(
    client: Client,
    tenant: TenantHandle,
    task_id: str,
    statuses: tuple[str, ...] = ("success", "failed", "timeout"),
    timeout_seconds: float = 15.0,
) -> dict[str, Any]:
    """Poll GET /tasks/{id} until the task reaches one of `statuses`."""
    deadline = time.monotonic() + timeout_seconds
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await client.get(f"/api/v1/bots/tasks/{task_id}", headers=tenant.sk)
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"task stayed {body.get('status')}: {body}")
