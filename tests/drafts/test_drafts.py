"""Drafts: create, read, replace, delete, TTL rules, expiry invisibility, privacy at rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stateless.config import Settings
from tests.conftest import Client, TenantHandle
from tests.privacy import assert_not_stored
from tests.support import count_rows, expire_rows
from tests.test_core import assert_problem

DRAFTS = "/api/v1/drafts"


def _parse(ts: str) -> datetime:
    assert ts.endswith("Z"), ts
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def test_crud_round_trip(client: Client, tenant: TenantHandle) -> None:
    created = await client.post(DRAFTS, headers=tenant.pk, json={"content": "hello ✍️"})
    assert created.status_code == 201
    body = created.json()
    assert body["content"] == "hello ✍️" and body["tenant"] == tenant.app_id
    lifetime = _parse(body["expires_at"]) - _parse(body["created_at"])
    assert timedelta(hours=23, minutes=59) < lifetime <= timedelta(hours=24, seconds=1)
    draft = f"{DRAFTS}/{body['id']}"
    assert (await client.get(draft, headers=tenant.pk)).json()["content"] == "hello ✍️"
    replaced = await client.put(draft, headers=tenant.pk, json={"content": "v2", "ttl_seconds": 60})
    assert replaced.status_code == 200 and replaced.json()["content"] == "v2"
    assert _parse(replaced.json()["expires_at"]) < datetime.now(UTC) + timedelta(seconds=61)
    assert (await client.get(draft, headers=tenant.pk)).json()["content"] == "v2"
    listing = await client.get(DRAFTS, headers=tenant.sk)
    assert [d["id"] for d in listing.json()["drafts"]] == [body["id"]]
    assert (await client.delete(draft, headers=tenant.pk)).json() == {"status": "deleted"}
    assert_problem(await client.get(draft, headers=tenant.pk), 404, "draft_not_found")
    assert_problem(await client.delete(draft, headers=tenant.pk), 404, "draft_not_found")


async def test_ttl_above_maximum_is_422(client: Client, tenant: TenantHandle) -> None:
    r = await client.post(
        DRAFTS, headers=tenant.pk, json={"content": "x", "ttl_seconds": 7 * 86400 + 1}
    )
    body = assert_problem(r, 422, "ttl_out_of_range")
    assert body["errors"][0]["loc"] == ["body", "ttl_seconds"]
    assert_problem(
        await client.post(DRAFTS, headers=tenant.pk, json={"content": "x", "ttl_seconds": 0}),
        422,
        "ttl_out_of_range",
    )
    ok = await client.post(
        DRAFTS, headers=tenant.pk, json={"content": "x", "ttl_seconds": 7 * 86400}
    )
    assert ok.status_code == 201


async def test_content_over_one_mebibyte_is_413(client: Client, tenant: TenantHandle) -> None:
    r = await client.post(DRAFTS, headers=tenant.pk, json={"content": "é" * (512 * 1024 + 1)})
    assert_problem(r, 413, "payload_too_large")


async def test_expired_drafts_are_invisible_before_cleanup(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    ids = []
    for i in range(3):
        ids.append(
            (await client.post(DRAFTS, headers=tenant.pk, json={"content": f"d{i}"})).json()["id"]
        )
    await expire_rows(settings, "drafts", "draft_id = :d", d=ids[0])
    assert await count_rows(settings, "drafts") == 3  # still physically there
    gone = f"{DRAFTS}/{ids[0]}"
    assert_problem(await client.get(gone, headers=tenant.pk), 404, "draft_not_found")
    assert_problem(
        await client.put(gone, headers=tenant.pk, json={"content": "revive"}),
        404,
        "draft_not_found",
    )
    assert_problem(await client.delete(gone, headers=tenant.pk), 404, "draft_not_found")
    listed = {d["id"] for d in (await client.get(DRAFTS, headers=tenant.sk)).json()["drafts"]}
    assert listed == set(ids[1:])
    stats = (await client.get("/api/v1/admin/stats", headers=tenant.sk)).json()
    assert stats["items"]["drafts"] == 2
    # the PUT did not resurrect it
    assert (
        await count_rows(
            settings,
            "drafts",
            "draft_id = :d AND expires_at > :now",
            d=ids[0],
            now=datetime.now(UTC).replace(tzinfo=None) if settings.is_sqlite else datetime.now(UTC),
        )
        == 0
    )


async def test_draft_content_is_encrypted_at_rest(
    client: Client, tenant: TenantHandle, settings: Settings, capsys
) -> None:
    secret = "my diary: alice@example.com called at +1 555 0100"
    await client.post(DRAFTS, headers=tenant.pk, json={"content": secret})
    await assert_not_stored(settings, [secret, "alice@example.com"], logs=capsys.readouterr().out)
