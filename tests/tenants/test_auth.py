"""SPEC 2 to the letter: X-App-ID checks, identical 401s, scopes, revocation and rotation."""

from __future__ import annotations

import asyncio
import time

import pytest

from stateless.config import Settings
from stateless.tenants.service import TenantService
from tests.conftest import Client, TenantHandle, run_tenant_service
from tests.test_core import assert_problem

ADMIN_STATS = "/api/v1/admin/stats"
DRAFTS = "/api/v1/drafts"


def _without_request_id(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "request_id"}


async def test_missing_app_id_is_400(client: Client, tenant: TenantHandle) -> None:
    r = await client.get(ADMIN_STATS, headers={"Authorization": tenant.sk["Authorization"]})
    body = assert_problem(r, 400, "missing_app_id")
    assert "Missing X-App-ID header" in body["detail"]


@pytest.mark.parametrize(
    "hostile",
    [
        "app'; DROP TABLE tenants;--",
        "<script>alert(1)</script>",
        "../../etc/passwd",
        "app id",
        "app\tid",
        "ünïcödé",
        "app.id",
        "app/id",
        "%00",
    ],
)
async def test_hostile_app_ids_are_400_invalid_format(client: Client, hostile: str) -> None:
    r = await client.get(
        ADMIN_STATS,
        headers=[(b"x-app-id", hostile.encode("utf-8")), (b"authorization", b"Bearer sk_x")],
    )
    body = assert_problem(r, 400, "invalid_app_id")
    assert "Invalid tenant ID format" in body["detail"]
    assert hostile not in r.text


async def test_app_id_of_65_chars_is_too_long_but_64_is_fine(client: Client, make_tenant) -> None:
    r = await client.get(ADMIN_STATS, headers={"X-App-ID": "a" * 65, "Authorization": "Bearer x"})
    body = assert_problem(r, 400, "invalid_app_id")
    assert "too long" in body["detail"]
    t64 = await make_tenant("b" * 64)
    assert (await client.get(ADMIN_STATS, headers=t64.sk)).status_code == 200


async def test_every_unauthenticated_case_answers_the_same_401(
    client: Client, tenant: TenantHandle, other_tenant: TenantHandle
) -> None:
    cases = {
        "unknown app": {"X-App-ID": "nobody", "Authorization": tenant.sk["Authorization"]},
        "missing key": {"X-App-ID": tenant.app_id},
        "wrong key": {"X-App-ID": tenant.app_id, "Authorization": "Bearer sk_000000000000_nope"},
        "malformed key": {"X-App-ID": tenant.app_id, "Authorization": "Bearer garbage"},
        "not bearer": {"X-App-ID": tenant.app_id, "Authorization": "Basic Zm9vOmJhcg=="},
        "other app's key": {
            "X-App-ID": tenant.app_id,
            "Authorization": other_tenant.sk["Authorization"],
        },
    }
    bodies = []
    for name, headers in cases.items():
        r = await client.get(ADMIN_STATS, headers=headers)
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer", name
        bodies.append(_without_request_id(r.json()))
    assert all(b == bodies[0] for b in bodies)


async def test_publishable_key_on_secret_endpoint_is_403(
    client: Client, tenant: TenantHandle
) -> None:
    assert_problem(await client.get(ADMIN_STATS, headers=tenant.pk), 403, "insufficient_scope")
    assert (await client.get(ADMIN_STATS, headers=tenant.sk)).status_code == 200
    # both key kinds work where either is allowed
    for headers in (tenant.pk, tenant.sk):
        assert (
            await client.post(DRAFTS, headers=headers, json={"content": "x"})
        ).status_code == 201


async def test_revoked_key_stops_working_within_five_seconds(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    assert (await client.get(ADMIN_STATS, headers=tenant.sk)).status_code == 200
    prefix = tenant.secret_key[:15]

    async def revoke(service: TenantService) -> str:
        return await service.revoke_key(tenant.app_id, prefix)

    await run_tenant_service(settings, revoke)
    started = time.monotonic()
    while (await client.get(ADMIN_STATS, headers=tenant.sk)).status_code == 200:
        assert time.monotonic() - started < 5, "revoked key still accepted after 5 s"
        await asyncio.sleep(0.2)
    assert_problem(await client.get(ADMIN_STATS, headers=tenant.sk), 401, "unauthorized")
    # the publishable key was not revoked
    assert (await client.post(DRAFTS, headers=tenant.pk, json={"content": "x"})).status_code == 201


async def test_rotation_keeps_old_keys_during_grace_only(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    async def rotate_with_grace(service: TenantService):
        return await service.rotate_key(tenant.app_id, grace_seconds=3600)

    new = await run_tenant_service(settings, rotate_with_grace)
    client.app.state.container.directory.invalidate()
    new_headers = {"X-App-ID": tenant.app_id, "Authorization": f"Bearer {new.secret_key}"}
    assert (await client.get(ADMIN_STATS, headers=tenant.sk)).status_code == 200
    assert (await client.get(ADMIN_STATS, headers=new_headers)).status_code == 200

    async def rotate_now(service: TenantService):
        return await service.rotate_key(tenant.app_id, grace_seconds=0)

    newest = await run_tenant_service(settings, rotate_now)
    client.app.state.container.directory.invalidate()
    assert_problem(await client.get(ADMIN_STATS, headers=tenant.sk), 401, "unauthorized")
    assert_problem(await client.get(ADMIN_STATS, headers=new_headers), 401, "unauthorized")
    newest_headers = {"X-App-ID": tenant.app_id, "Authorization": f"Bearer {newest.secret_key}"}
    assert (await client.get(ADMIN_STATS, headers=newest_headers)).status_code == 200


async def test_keys_are_stored_only_as_hashes(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    from tests.privacy import assert_not_stored

    await assert_not_stored(settings, [tenant.secret_key, tenant.publishable_key])


async def test_tenant_data_is_isolated(
    client: Client, tenant: TenantHandle, other_tenant: TenantHandle
) -> None:
    created = await client.post(DRAFTS, headers=tenant.pk, json={"content": "mine"})
    draft_id = created.json()["id"]
    for method in ("GET", "PUT", "DELETE"):
        kwargs = {"json": {"content": "theirs"}} if method == "PUT" else {}
        r = await client.request(method, f"{DRAFTS}/{draft_id}", headers=other_tenant.sk, **kwargs)
        never = await client.request(
            method, f"{DRAFTS}/{'0' * 32}", headers=other_tenant.sk, **kwargs
        )
        assert_problem(r, 404, "draft_not_found")
        assert _without_request_id(r.json())["code"] == _without_request_id(never.json())["code"]
        assert r.json()["title"] == never.json()["title"]
    stats = await client.get(ADMIN_STATS, headers=other_tenant.sk)
    assert stats.json()["items"]["drafts"] == 0
    assert (await client.get(f"{DRAFTS}/{draft_id}", headers=tenant.pk)).json()["content"] == "mine"
