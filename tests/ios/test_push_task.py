"""The `push` bot task: the same push as POST /ios/push, with a result that names no device."""

from __future__ import annotations

import pytest

from stateless.config import Settings
from tests.bots.conftest import execute
from tests.conftest import Client, TenantFactory, TenantHandle
from tests.ios.conftest import BUNDLE_ID, hex_token, sql
from tests.peers.apns import ApnsPeer
from tests.privacy import assert_not_stored
from tests.test_core import assert_problem


async def test_push_task_sends_and_keeps_only_counts(
    ios_client: Client,
    ios_tenant: TenantHandle,
    apns_peer: ApnsPeer,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    device_ids = [f"task-device-{i}-5a1e" for i in range(6)]
    tokens = [hex_token(i, prefix="e") for i in range(6)]
    for device_id, token in zip(device_ids, tokens, strict=True):
        r = await ios_client.post(
            "/api/v1/ios/register-token",
            headers=ios_tenant.pk,
            json={"token": token, "device_id": device_id},
        )
        assert r.status_code == 200
    apns_peer.answer(tokens[0], (410, "Unregistered"))
    apns_peer.answer(tokens[1], (400, "TopicDisallowed"))
    r = await execute(
        ios_client,
        ios_tenant,
        "push",
        {"device_ids": [*device_ids, "unknown-device"], "alert": {"title": "T", "body": "B"}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {
        "sent": 4,
        "failed": 2,
        "removed": 1,
        "reasons": {"NotRegistered": 1, "TopicDisallowed": 1, "Unregistered": 1},
    }
    assert {x.token for x in apns_peer.received} == set(tokens)
    assert {x.topic for x in apns_peer.received} == {BUNDLE_ID}
    assert await sql(ios_client, "SELECT count(*) FROM ios_device_tokens") == [(5,)]
    r = await execute(ios_client, ios_tenant, "push", {"all": True, "badge": 1})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["sent"] == 4
    captured = capsys.readouterr()
    await assert_not_stored(settings, [*device_ids, *tokens], logs=captured.out + captured.err)


async def test_push_task_rejects_bad_context_and_missing_credentials(
    ios_client: Client, make_tenant: TenantFactory, ios_tenant: TenantHandle
) -> None:
    r = await execute(ios_client, ios_tenant, "push", {"alert": {"title": "T", "body": "B"}})
    assert_problem(r, 422, "validation_error")
    bare = await make_tenant("app-bare", bundle_id=BUNDLE_ID)
    r = await execute(ios_client, bare, "push", {"all": True, "badge": 1})
    assert_problem(r, 422, "apns_not_configured")
