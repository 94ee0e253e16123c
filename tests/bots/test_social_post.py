"""social_post against a Mastodon-shaped peer: token, Idempotency-Key, result without the token."""

from __future__ import annotations

import pytest

from stateless.config import Settings
from tests.bots.conftest import execute
from tests.conftest import ClientFactory, TenantFactory
from tests.peers.mastodon import running_mastodon
from tests.privacy import assert_not_stored
from tests.test_core import assert_problem

TOKEN = "mastodon-token-0123456789-abcdefghij"


async def test_status_is_posted_with_token_and_idempotency_key(
    capsys: pytest.CaptureFixture[str],
    make_client: ClientFactory,
    make_tenant: TenantFactory,
    settings: Settings,
) -> None:
    with running_mastodon(TOKEN) as peer:
        client = await make_client(webhook_allow_private_networks=True)
        tenant = await make_tenant("social", mastodon_url=peer.url, mastodon_token=TOKEN)
        r = await execute(
            client,
            tenant,
            "social_post",
            {"status": "Version 2.0 is out!", "visibility": "unlisted"},
        )
        assert r.status_code == 200, r.text
        [status] = peer.statuses
        assert status["content"] == "<p>Version 2.0 is out!</p>"
        assert status["visibility"] == "unlisted"
        [request] = peer.requests
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        task_id = r.json()["task_id"]
        assert request.headers["idempotency-key"] == f"stateless-{task_id}"
        assert r.json()["result"] == {
            "status_id": status["id"],
            "url": status["url"],
            "visibility": "unlisted",
        }
        assert TOKEN not in r.text
    logs = capsys.readouterr().out
    assert "/api/v1/bots/execute" in logs
    await assert_not_stored(settings, [TOKEN], logs=logs)


async def test_bad_token_is_502_and_missing_configuration_422(
    make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    with running_mastodon("the-real-token") as peer:
        client = await make_client(webhook_allow_private_networks=True)
        tenant = await make_tenant("social", mastodon_url=peer.url, mastodon_token=TOKEN)
        r = await execute(client, tenant, "social_post", {"status": "hi"})
        body = assert_problem(r, 502, "provider_error")
        assert "401" in body["detail"] and TOKEN not in r.text
        bare = await make_tenant("bare")
        r = await execute(client, bare, "social_post", {"status": "hi"})
        assert_problem(r, 422, "mastodon_not_configured")
        r = await execute(client, tenant, "social_post", {"status": ""})
        assert_problem(r, 422, "validation_error")
        assert peer.statuses == []


async def test_mastodon_on_a_private_address_is_refused_by_default(
    make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    with running_mastodon(TOKEN) as peer:
        client = await make_client()
        tenant = await make_tenant("social", mastodon_url=peer.url, mastodon_token=TOKEN)
        r = await execute(client, tenant, "social_post", {"status": "hi"})
        assert_problem(r, 422, "target_refused")
        assert peer.requests == []
