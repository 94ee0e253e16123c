"""Web Push fixtures: a local push service (HTTPS, HTTP/2 and HTTP/1.1), an app pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.peers.webpush import WebPushPeer

CONTACT = "mailto:ops@example.com"
HIGH_LIMITS = ["web.subscribe=100000/minute", "web.push=100000/minute"]
SUBSCRIBE = "/api/v1/web/subscribe"
UNSUBSCRIBE = "/api/v1/web/unsubscribe"
PUSH = "/api/v1/web/push"
VAPID_KEY = "/api/v1/web/vapid-public-key"


@dataclass
class WebApp:
    """A configured app: its handle and its VAPID public key (as the page fetches it)."""

    tenant: TenantHandle
    public_key: str


@pytest.fixture
async def push_service(tmp_path: Path) -> AsyncIterator[WebPushPeer]:
    async with WebPushPeer().running(tmp_path / "push-service") as peer:
        yield peer


@pytest.fixture
async def web_client(push_service: WebPushPeer, make_client: ClientFactory) -> Client:
    """The app trusting only the push service's test CA; the peer outlives the app."""
    return await make_client(
        webpush_ca_file=push_service.ca_file, webpush_allow_private_networks=True
    )


async def configure_web_app(
    client: Client, make_tenant: TenantFactory, peer: WebPushPeer, app_id: str = "web-a"
) -> WebApp:
    tenant = await make_tenant(
        app_id, webpush_generate_keys=True, webpush_contact=CONTACT, rate_limits=HIGH_LIMITS
    )
    r = await client.get(VAPID_KEY, headers=tenant.pk)
    assert r.status_code == 200, r.text
    public_key = r.json()["public_key"]
    peer.vapid_keys.add(public_key)
    return WebApp(tenant, public_key)


@pytest.fixture
async def web_app(
    web_client: Client, make_tenant: TenantFactory, push_service: WebPushPeer
) -> WebApp:
    return await configure_web_app(web_client, make_tenant, push_service)


async def subscribe(
    client: Client, app: WebApp, subscriber_id: str, subscription: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    r = await client.post(
        SUBSCRIBE,
        headers=app.tenant.pk,
        json={"subscription": subscription, "subscriber_id": subscriber_id, **extra},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body
