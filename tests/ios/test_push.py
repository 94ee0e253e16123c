"""POST /ios/push end to end against the local APNs peer (HTTP/2, TLS, ES256 JWT checks)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stateless.config import Settings
from stateless.ios.apns import APNS_RETRY, ApnsClient, build_verify
from tests.bots.broadcasts import broadcast, counts
from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.ios.conftest import BUNDLE_ID, HIGH_LIMITS, KEY_ID, TEAM_ID, ApnsKey, hex_token, sql
from tests.peers.apns import ApnsPeer, free_port
from tests.privacy import assert_not_stored
from tests.test_core import assert_problem

REGISTER = "/api/v1/ios/register-token"
PUSH = "/api/v1/ios/push"
ALERT = {"title": "Hello", "body": "World"}


async def register(
    client: Client, tenant: TenantHandle, device_id: str, token: str, **extra: object
) -> None:
    r = await client.post(
        REGISTER, headers=tenant.pk, json={"token": token, "device_id": device_id, **extra}
    )
    assert r.status_code == 200, r.text


async def test_push_to_a_thousand_devices_with_mixed_answers(
    ios_client: Client,
    ios_tenant: TenantHandle,
    apns_peer: ApnsPeer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1,001 listed ids answered inline (per-id results): just above the default PUSH_SYNC_MAX
    monkeypatch.setattr(ios_client.app.state.container.settings, "push_sync_max", 1001)
    devices = {f"device-{i}": hex_token(i) for i in range(1000)}
    for device_id, token in devices.items():
        await register(ios_client, ios_tenant, device_id, token)
    tokens = list(devices.values())
    script: dict[range, list[tuple[int, str | None]]] = {
        range(0, 100): [(410, "Unregistered")],
        range(100, 130): [(410, "ExpiredToken")],
        range(130, 180): [(400, "BadDeviceToken")],
        range(180, 190): [(400, "DeviceTokenNotForTopic")],
        range(190, 240): [(429, "TooManyRequests"), (200, None)],
        range(240, 290): [(500, "InternalServerError"), (200, None)],
        range(290, 300): [(503, "ServiceUnavailable")],  # never recovers
        range(300, 310): [(400, "BadCollapseId")],  # reported, token kept
    }
    for indexes, answers in script.items():
        for i in indexes:
            apns_peer.script[tokens[i]] = answers

    listed = [*devices, "never-registered"]
    r = await ios_client.post(
        PUSH, headers=ios_tenant.sk, json={"device_ids": listed, "alert": ALERT, "badge": 3}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["sent"], body["removed"], body["failed"]) == (790, 190, 21)
    results = body["results"]
    assert [x["device_id"] for x in results] == listed
    by_id = {x["device_id"]: x for x in results}
    assert by_id["device-0"] == {
        "device_id": "device-0",
        "status": "removed",
        "reason": "Unregistered",
    }
    assert by_id["device-100"]["reason"] == "ExpiredToken"
    assert by_id["device-130"] == {
        "device_id": "device-130",
        "status": "removed",
        "reason": "BadDeviceToken",
    }
    assert by_id["device-185"]["status"] == "removed"
    assert by_id["device-200"] == {"device_id": "device-200", "status": "sent", "reason": None}
    assert by_id["device-295"] == {
        "device_id": "device-295",
        "status": "failed",
        "reason": "ServiceUnavailable",
    }
    assert by_id["device-305"]["reason"] == "BadCollapseId"
    assert by_id["never-registered"]["status"] == "not_registered"

    # dead tokens are gone from the database, the others stay
    assert await sql(ios_client, "SELECT count(*) FROM ios_device_tokens") == [(810,)]
    # retried ones were delivered exactly once; the hopeless ones were tried a bounded number
    for i in (190, 239, 240, 289):
        assert apns_peer.delivered(tokens[i]) == 1
        assert sum(1 for x in apns_peer.received if x.token == tokens[i]) == 2
    for i in (290, 299):
        assert sum(1 for x in apns_peer.received if x.token == tokens[i]) == 4
    assert [
        (i, apns_peer.delivered(tokens[i]))
        for i in range(310, 1000)
        if apns_peer.delivered(tokens[i]) != 1
    ] == []
    assert len(apns_peer.received) == 1000 + 100 + 10 * 3
    first = apns_peer.received[0]
    assert first.http_version == "2" and first.topic == BUNDLE_ID
    assert first.push_type == "alert" and first.priority == "10"
    assert first.payload == {"aps": {"alert": {"title": "Hello", "body": "World"}, "badge": 3}}
    assert len({x.jwt for x in apns_peer.received}) == 1  # one provider token, reused

    # pushing to everyone: counts only, the removed devices are not tried again
    apns_peer.received.clear()
    task = await broadcast(ios_client, ios_tenant.sk, PUSH, {"all": True, "alert": ALERT})
    assert counts(task) == {"sent": 790, "failed": 20, "removed": 0}
    assert task["progress"]["total"] == 810
    pushed = {x.token for x in apns_peer.received}
    assert len(pushed) == 810 and not pushed & set(tokens[:190])


async def test_provider_token_is_reused_then_refreshed_after_its_age_limit(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer, sandbox_peer: ApnsPeer
) -> None:
    now = [1_800_000_000.0]
    settings = ios_client.app.state.container.settings
    apns = ApnsClient(
        production_url=apns_peer.url,
        sandbox_url=sandbox_peer.url,
        verify=build_verify(settings.apns_ca_file),
        clock=lambda: now[0],
    )
    container = ios_client.app.state.container
    original = container.apns
    container.apns = apns
    try:
        for i in range(3):
            await register(ios_client, ios_tenant, f"d{i}", hex_token(i))

        async def push_all() -> set[str]:
            apns_peer.received.clear()
            task = await broadcast(ios_client, ios_tenant.sk, PUSH, {"all": True, "badge": 1})
            assert counts(task)["sent"] == 3, task
            return {x.jwt for x in apns_peer.received}

        first = await push_all()
        assert len(first) == 1
        assert apns_peer.received[0].iat == int(now[0])
        now[0] += 49 * 60
        assert await push_all() == first  # still fresh: reused
        now[0] += 2 * 60  # 51 minutes old: re-signed before Apple's 60-minute limit
        second = await push_all()
        assert len(second) == 1 and second != first
        assert apns_peer.received[0].iat == int(now[0])
        now[0] += 10 * 60
        assert await push_all() == second
    finally:
        container.apns = original
        await apns.aclose()


async def test_expired_tokens_are_never_pushed_to(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer
) -> None:
    await register(ios_client, ios_tenant, "live", hex_token(1))
    await register(ios_client, ios_tenant, "stale", hex_token(2))
    kit = ios_client.app.state.container.privacy
    stale_hash = kit.keyed_hash("ios-device-id", "app-a", "stale")
    await sql(
        ios_client,
        "UPDATE ios_device_tokens SET expires_at = created_at WHERE device_hash = :h",
        h=stale_hash,
    )
    task = await broadcast(ios_client, ios_tenant.sk, PUSH, {"all": True, "alert": ALERT})
    assert counts(task) == {"sent": 1, "failed": 0, "removed": 0}
    r = await ios_client.post(
        PUSH, headers=ios_tenant.sk, json={"device_ids": ["stale", "live"], "alert": ALERT}
    )
    assert r.json()["results"] == [
        {"device_id": "stale", "status": "not_registered", "reason": "NotRegistered"},
        {"device_id": "live", "status": "sent", "reason": None},
    ]
    assert {x.token for x in apns_peer.received} == {hex_token(1)}


async def test_other_tenants_devices_are_unreachable(
    ios_client: Client,
    ios_tenant: TenantHandle,
    make_tenant: TenantFactory,
    apns_key: ApnsKey,
    apns_peer: ApnsPeer,
) -> None:
    other = await make_tenant(
        "app-b",
        bundle_id="com.example.other",
        apns_team_id=TEAM_ID,
        apns_key_id=KEY_ID,
        apns_key_p8=apns_key.private_pem,
        rate_limits=HIGH_LIMITS,
    )
    await register(ios_client, ios_tenant, "shared-id", hex_token(1, "a"))
    await register(ios_client, other, "shared-id", hex_token(1, "b"))
    await register(ios_client, other, "only-b", hex_token(2, "b"))
    r = await ios_client.post(
        PUSH, headers=ios_tenant.sk, json={"device_ids": ["shared-id", "only-b"], "badge": 1}
    )
    assert r.json()["results"] == [
        {"device_id": "shared-id", "status": "sent", "reason": None},
        {"device_id": "only-b", "status": "not_registered", "reason": "NotRegistered"},
    ]
    task = await broadcast(ios_client, ios_tenant.sk, PUSH, {"all": True, "badge": 1})
    assert counts(task)["sent"] == 1
    assert [x.token for x in apns_peer.received] == [hex_token(1, "a")] * 2
    assert {x.topic for x in apns_peer.received} == {BUNDLE_ID}


async def test_sandbox_tokens_go_to_the_sandbox_host_with_all_headers(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer, sandbox_peer: ApnsPeer
) -> None:
    await register(ios_client, ios_tenant, "dev-phone", hex_token(1), environment="sandbox")
    await register(ios_client, ios_tenant, "prod-phone", hex_token(2), topic="com.example.other")
    task = await broadcast(
        ios_client,
        ios_tenant.sk,
        PUSH,
        {
            "all": True,
            "alert": {"title": "T", "subtitle": "S", "body": "B"},
            "sound": "default",
            "data": {"thread": "t-1", "n": 2},
            "collapse_id": "news",
            "expiration": 1_900_000_000,
            "priority": 5,
        },
    )
    assert counts(task)["sent"] == 2, task
    [sandbox] = sandbox_peer.received
    [production] = apns_peer.received
    assert sandbox.token == hex_token(1) and sandbox.topic == BUNDLE_ID
    assert production.token == hex_token(2) and production.topic == "com.example.other"
    for got in (sandbox, production):
        assert got.priority == "5" and got.collapse_id == "news"
        assert got.expiration == "1900000000" and got.push_type == "alert"
        assert got.payload == {
            "aps": {"alert": {"title": "T", "subtitle": "S", "body": "B"}, "sound": "default"},
            "thread": "t-1",
            "n": 2,
        }


async def test_background_push(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer
) -> None:
    await register(ios_client, ios_tenant, "d", hex_token(1))
    r = await ios_client.post(
        PUSH,
        headers=ios_tenant.sk,
        json={"device_ids": ["d"], "push_type": "background", "data": {"sync": True}},
    )
    assert r.json()["sent"] == 1, r.text
    [got] = apns_peer.received
    assert (got.push_type, got.priority) == ("background", "5")
    assert got.payload == {"aps": {"content-available": 1}, "sync": True}


async def test_oversized_payload_is_refused_per_device_before_sending(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer
) -> None:
    await register(ios_client, ios_tenant, "d", hex_token(1))
    r = await ios_client.post(
        PUSH,
        headers=ios_tenant.sk,
        json={
            "device_ids": ["d"],
            "alert": {"title": "x", "body": "y" * 4000},
            "data": {"k": "z" * 200},
        },
    )
    assert r.json() == {
        "sent": 0,
        "failed": 1,
        "removed": 0,
        "results": [{"device_id": "d", "status": "failed", "reason": "PayloadTooLarge"}],
    }
    assert apns_peer.received == []
    assert await sql(ios_client, "SELECT count(*) FROM ios_device_tokens") == [(1,)]


@pytest.mark.parametrize(
    "body",
    [
        {"alert": ALERT},
        {"all": False, "alert": ALERT},
        {"all": True, "device_ids": ["d"], "alert": ALERT},
        {"device_ids": [], "alert": ALERT},
        {"all": True},
        {"all": True, "push_type": "background", "alert": ALERT},
        {"all": True, "push_type": "background", "priority": 10},
        {"all": True, "badge": 1, "priority": 7},
        {"all": True, "badge": 1, "data": {"aps": {}}},
        {"all": True, "badge": 1, "collapse_id": "c" * 65},
        {"all": True, "badge": 1, "push_type": "voip"},
        {"all": True, "alert": {"title": "no body"}},
    ],
)
async def test_bad_push_requests_are_422(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer, body: dict[str, object]
) -> None:
    await register(ios_client, ios_tenant, "d", hex_token(1))
    assert_problem(
        await ios_client.post(PUSH, headers=ios_tenant.sk, json=body), 422, "validation_error"
    )
    assert apns_peer.received == []


async def test_push_needs_the_secret_key_and_apns_credentials(
    ios_client: Client, ios_tenant: TenantHandle, make_tenant: TenantFactory
) -> None:
    body = {"all": True, "alert": ALERT}
    assert_problem(
        await ios_client.post(PUSH, headers=ios_tenant.pk, json=body), 403, "insufficient_scope"
    )
    bare = await make_tenant("app-bare", bundle_id=BUNDLE_ID)
    problem = assert_problem(
        await ios_client.post(PUSH, headers=bare.sk, json=body), 409, "apns_not_configured"
    )
    assert "--apns-key-file" in problem["detail"]


async def test_push_traffic_leaves_no_plaintext(
    ios_client: Client,
    ios_tenant: TenantHandle,
    apns_peer: ApnsPeer,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    values: list[str] = []
    for i in range(30):
        device_id, token = f"iphone-of-user-{i:03d}-9e8d", hex_token(i, prefix="d")
        values += [device_id, token]
        await register(ios_client, ios_tenant, device_id, token)
        if i % 3 == 0:
            apns_peer.script[token] = [(410, "Unregistered")]
    r = await ios_client.post(
        PUSH, headers=ios_tenant.sk, json={"device_ids": values[::2], "alert": ALERT}
    )
    assert (r.json()["sent"], r.json()["removed"]) == (20, 10)
    task = await broadcast(ios_client, ios_tenant.sk, PUSH, {"all": True, "badge": 2})
    assert counts(task)["sent"] == 20
    captured = capsys.readouterr()
    await assert_not_stored(settings, values, logs=captured.out + captured.err)


async def test_expired_provider_token_is_resigned_but_not_within_twenty_minutes(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer, sandbox_peer: ApnsPeer
) -> None:
    now = [1_800_000_000.0]
    container = ios_client.app.state.container
    apns = ApnsClient(
        production_url=apns_peer.url,
        sandbox_url=sandbox_peer.url,
        verify=build_verify(container.settings.apns_ca_file),
        clock=lambda: now[0],
        retry=APNS_RETRY.without_sleep(),
    )
    original = container.apns
    container.apns = apns
    try:
        await register(ios_client, ios_tenant, "d", hex_token(1))
        push = {"device_ids": ["d"], "badge": 1}
        assert (await ios_client.post(PUSH, headers=ios_tenant.sk, json=push)).json()["sent"] == 1
        first_jwt = apns_peer.received[-1].jwt
        # 10 minutes old: APNs' complaint cannot be answered by a new token yet (Apple would
        # answer TooManyProviderTokenUpdates), so the device is reported, not retried.
        now[0] += 10 * 60
        apns_peer.answer(hex_token(1), (403, "ExpiredProviderToken"), (200, None))
        r = await ios_client.post(PUSH, headers=ios_tenant.sk, json=push)
        assert r.json()["results"] == [
            {"device_id": "d", "status": "failed", "reason": "ExpiredProviderToken"}
        ]
        assert apns_peer.received[-1].jwt == first_jwt
        # 25 minutes old: re-signed at once and retried with the new token.
        now[0] += 15 * 60
        apns_peer.answer(hex_token(1), (403, "ExpiredProviderToken"), (200, None))
        r = await ios_client.post(PUSH, headers=ios_tenant.sk, json=push)
        assert r.json()["sent"] == 1, r.text
        retried, delivered = apns_peer.received[-2:]
        assert retried.jwt == first_jwt and delivered.jwt != first_jwt
        assert delivered.iat == int(now[0]) and delivered.answer == (200, None)
    finally:
        container.apns = original
        await apns.aclose()


async def test_retry_after_is_honoured_and_a_long_one_is_reported_not_waited_for(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer
) -> None:
    await register(ios_client, ios_tenant, "d", hex_token(1))
    push = {"device_ids": ["d"], "badge": 1}
    apns_peer.retry_after = "1"
    apns_peer.answer(hex_token(1), (429, "TooManyRequests"), (200, None))
    started = time.monotonic()
    r = await ios_client.post(PUSH, headers=ios_tenant.sk, json=push)
    assert r.json()["sent"] == 1, r.text
    assert time.monotonic() - started >= 1.0  # the peer's Retry-After: 1 was waited for
    assert apns_peer.attempts(hex_token(1)) == 2
    # An hour: reported at once (the caller may try later), never a request held that long.
    apns_peer.retry_after = "3600"
    apns_peer.answer(hex_token(1), (429, "TooManyRequests"), (200, None))
    r = await ios_client.post(PUSH, headers=ios_tenant.sk, json=push)
    assert r.json()["results"] == [
        {"device_id": "d", "status": "failed", "reason": "TooManyRequests"}
    ]
    assert apns_peer.attempts(hex_token(1)) == 3


async def test_unreachable_apns_is_a_502_not_a_hang(
    make_client: ClientFactory, ios_tenant: TenantHandle
) -> None:
    closed = f"https://127.0.0.1:{free_port()}"
    client = await make_client(apns_production_url=closed, apns_sandbox_url=closed)
    await register(client, ios_tenant, "d", hex_token(1))
    r = await client.post(PUSH, headers=ios_tenant.sk, json={"device_ids": ["d"], "badge": 1})
    body = assert_problem(r, 502, "apns_unreachable")
    assert (body["sent"], body["failed"], body["removed"]) == (0, 0, 0)
