"""register-token / unregister-token: validation, upsert, expiry, scopes, isolation, privacy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stateless.config import Settings
from tests.conftest import Client, TenantFactory, TenantHandle
from tests.ios.conftest import BUNDLE_ID, hex_token, sql
from tests.privacy import assert_not_stored
from tests.test_core import assert_problem

REGISTER = "/api/v1/ios/register-token"
UNREGISTER = "/api/v1/ios/unregister-token"


def parse_time(value: str) -> datetime:
    assert value.endswith("Z") or value.endswith("+00:00"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_register_stores_sealed_token_with_default_expiry(
    ios_client: Client, ios_tenant: TenantHandle
) -> None:
    before = datetime.now(UTC)
    r = await ios_client.post(
        REGISTER, headers=ios_tenant.pk, json={"token": hex_token(1), "device_id": "device-1"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "registered" and body["tenant"] == "app-a"
    expires = parse_time(body["expires_at"])
    assert timedelta(days=30) <= expires - before <= timedelta(days=30, seconds=10)
    rows = await sql(
        ios_client,
        "SELECT app_id, device_hash, token_sealed, environment, topic FROM ios_device_tokens",
    )
    assert len(rows) == 1
    app_id, device_hash, sealed, environment, topic = rows[0]
    assert app_id == "app-a" and environment == "production" and topic == BUNDLE_ID
    assert device_hash != "device-1" and "device-1" not in str(device_hash)
    assert hex_token(1) not in str(sealed)
    kit = ios_client.app.state.container.privacy
    assert kit.decrypt_text("apns-token", "app-a", sealed) == hex_token(1)


async def test_register_again_replaces_token_and_extends_expiry(
    ios_client: Client, ios_tenant: TenantHandle
) -> None:
    first = await ios_client.post(
        REGISTER,
        headers=ios_tenant.sk,
        json={"token": hex_token(1), "device_id": "d", "ttl_seconds": 3600},
    )
    assert first.status_code == 200
    second = await ios_client.post(
        REGISTER,
        headers=ios_tenant.pk,
        json={
            "token": hex_token(2).upper(),
            "device_id": "d",
            "environment": "sandbox",
            "topic": "com.example.other",
        },
    )
    assert second.status_code == 200
    assert parse_time(second.json()["expires_at"]) - parse_time(
        first.json()["expires_at"]
    ) > timedelta(days=29)
    rows = await sql(ios_client, "SELECT token_sealed, environment, topic FROM ios_device_tokens")
    assert len(rows) == 1
    kit = ios_client.app.state.container.privacy
    assert kit.decrypt_text("apns-token", "app-a", rows[0][0]) == hex_token(2)  # normalized
    assert rows[0][1:] == ("sandbox", "com.example.other")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"token": "zz" * 32, "device_id": "d"}, "token"),
        ({"token": "a" * 63, "device_id": "d"}, "token"),
        ({"token": "a" * 201, "device_id": "d"}, "token"),
        ({"token": "a" * 64 + " ", "device_id": "d"}, "token"),
        ({"token": "a" * 64, "device_id": ""}, "device_id"),
        ({"token": "a" * 64, "device_id": "x" * 257}, "device_id"),
        ({"token": "a" * 64, "device_id": "d", "environment": "development"}, "environment"),
        ({"device_id": "d"}, "token"),
    ],
)
async def test_register_rejects_bad_input_with_422(
    ios_client: Client, ios_tenant: TenantHandle, payload: dict[str, object], field: str
) -> None:
    r = await ios_client.post(REGISTER, headers=ios_tenant.pk, json=payload)
    body = assert_problem(r, 422, "validation_error")
    assert any(e["loc"][-1] == field for e in body["errors"]), body
    assert "zz" * 32 not in r.text  # the submitted value is never echoed
    assert await sql(ios_client, "SELECT count(*) FROM ios_device_tokens") == [(0,)]


async def test_register_accepts_the_limits(ios_client: Client, ios_tenant: TenantHandle) -> None:
    r = await ios_client.post(
        REGISTER, headers=ios_tenant.pk, json={"token": "AB" * 100, "device_id": "x" * 256}
    )
    assert r.status_code == 200, r.text
    r = await ios_client.post(
        REGISTER,
        headers=ios_tenant.pk,
        json={"token": "ab" * 32, "device_id": "y", "ttl_seconds": 60 * 86400},
    )
    assert r.status_code == 200, r.text
    assert await sql(ios_client, "SELECT count(*) FROM ios_device_tokens") == [(2,)]


async def test_ttl_above_sixty_days_is_422(ios_client: Client, ios_tenant: TenantHandle) -> None:
    r = await ios_client.post(
        REGISTER,
        headers=ios_tenant.pk,
        json={"token": hex_token(1), "device_id": "d", "ttl_seconds": 60 * 86400 + 1},
    )
    assert_problem(r, 422, "ttl_out_of_range")


async def test_unregister_is_idempotent_and_scoped(
    ios_client: Client, ios_tenant: TenantHandle, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("app-b")
    for tenant in (ios_tenant, other):
        r = await ios_client.post(
            REGISTER, headers=tenant.pk, json={"token": hex_token(1), "device_id": "same"}
        )
        assert r.status_code == 200
    # app-b forgetting "same" leaves app-a's device alone
    r = await ios_client.post(UNREGISTER, headers=other.pk, json={"device_id": "same"})
    assert r.status_code == 200 and r.json() == {"status": "unregistered"}
    assert await sql(ios_client, "SELECT app_id FROM ios_device_tokens") == [("app-a",)]
    for _ in range(2):
        r = await ios_client.post(UNREGISTER, headers=ios_tenant.sk, json={"device_id": "same"})
        assert r.status_code == 200 and r.json() == {"status": "unregistered"}
    r = await ios_client.post(UNREGISTER, headers=ios_tenant.pk, json={"device_id": "never"})
    assert r.status_code == 200
    assert await sql(ios_client, "SELECT count(*) FROM ios_device_tokens") == [(0,)]
    assert_problem(
        await ios_client.post(UNREGISTER, headers=ios_tenant.pk, json={"device_id": ""}),
        422,
        "validation_error",
    )


async def test_tokens_need_a_valid_key(ios_client: Client, ios_tenant: TenantHandle) -> None:
    body = {"token": hex_token(1), "device_id": "d"}
    assert_problem(await ios_client.post(REGISTER, json=body), 400, "missing_app_id")
    bad = {"X-App-ID": "app-a", "Authorization": "Bearer sk_000000000000_nope"}
    assert_problem(await ios_client.post(REGISTER, headers=bad, json=body), 401, "unauthorized")
    assert await sql(ios_client, "SELECT count(*) FROM ios_device_tokens") == [(0,)]


async def test_tokens_and_device_ids_are_not_stored_in_plaintext(
    ios_client: Client,
    ios_tenant: TenantHandle,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values: list[str] = []
    for i in range(20):
        device_id = f"ios-device-{i:04d}-7f3c1b2a"
        token = hex_token(i, prefix="c")
        values += [device_id, token]
        r = await ios_client.post(
            REGISTER, headers=ios_tenant.pk, json={"token": token, "device_id": device_id}
        )
        assert r.status_code == 200
    for i in range(0, 20, 2):
        r = await ios_client.post(
            UNREGISTER, headers=ios_tenant.pk, json={"device_id": f"ios-device-{i:04d}-7f3c1b2a"}
        )
        assert r.status_code == 200
    captured = capsys.readouterr()
    await assert_not_stored(settings, values, logs=captured.out + captured.err)


async def test_cleanup_and_erasure_delete_token_rows(
    ios_client: Client, ios_tenant: TenantHandle, make_tenant: TenantFactory
) -> None:
    other = await make_tenant("app-b")
    for tenant, device_id in ((ios_tenant, "old"), (ios_tenant, "fresh"), (other, "old")):
        r = await ios_client.post(
            REGISTER, headers=tenant.pk, json={"token": hex_token(1), "device_id": device_id}
        )
        assert r.status_code == 200
    old_hash = ios_client.app.state.container.privacy.keyed_hash("ios-device-id", "app-a", "old")
    await sql(
        ios_client,
        "UPDATE ios_device_tokens SET expires_at = created_at WHERE device_hash = :h",
        h=old_hash,
    )
    stats = (await ios_client.get("/api/v1/admin/stats", headers=ios_tenant.sk)).json()
    assert "device_tokens" in str(stats)
    r = await ios_client.post("/api/v1/admin/cleanup", headers=ios_tenant.sk)
    assert r.status_code == 200, r.text
    assert await sql(ios_client, "SELECT app_id FROM ios_device_tokens ORDER BY app_id") == [
        ("app-a",),
        ("app-b",),
    ]
    r = await ios_client.delete("/api/v1/admin/data", headers=ios_tenant.sk)
    assert r.status_code == 200, r.text
    assert await sql(ios_client, "SELECT app_id FROM ios_device_tokens") == [("app-b",)]
