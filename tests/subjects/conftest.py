"""Subjects fixtures: an app that accepts device tokens and Web Push subscriptions, and helpers
that register a subject's rows through the API, as the app would."""

from __future__ import annotations

import secrets
from typing import Any

import jwt
import pytest

from stateless.config import Settings
from stateless.ios.service import device_hash
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.webpush.service import subscriber_hash
from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.peers.webpush import WebPushPeer

ERASE = "/api/v1/subjects/erase"
RETENTION = "/api/v1/admin/retention"
JWKS = "/.well-known/jwks.json"
REGISTER = "/api/v1/ios/register-token"
SUBSCRIBE = "/api/v1/web/subscribe"
CONTACT = "mailto:ops@example.com"
# The kinds erasure on request reaches in this tree (a domain that registers a subject key
# later adds its kind to every answer, so tests compare these and require the rest to be 0).
SUBJECT_KINDS = {"device_tokens", "webpush_subscriptions"}


@pytest.fixture
async def subjects_client(make_client: ClientFactory) -> Client:
    """Subscriptions point at 127.0.0.1 (no push is sent in these tests)."""
    return await make_client(webpush_allow_private_networks=True)


async def make_app(make_tenant: TenantFactory, app_id: str) -> TenantHandle:
    return await make_tenant(app_id, webpush_generate_keys=True, webpush_contact=CONTACT)


async def register_device(client: Client, tenant: TenantHandle, device_id: str) -> None:
    r = await client.post(
        REGISTER,
        headers=tenant.pk,
        json={"token": secrets.token_hex(32), "device_id": device_id},
    )
    assert r.status_code == 200, r.text


async def subscribe(client: Client, tenant: TenantHandle, subscriber_id: str) -> None:
    subscription = WebPushPeer().new_subscription()
    subscription["endpoint"] = f"https://127.0.0.1:9/push/{secrets.token_urlsafe(16)}"
    r = await client.post(
        SUBSCRIBE,
        headers=tenant.pk,
        json={"subscription": subscription, "subscriber_id": subscriber_id},
    )
    assert r.status_code == 200, r.text


def device_hash_of(settings: Settings, app_id: str, device_id: str) -> str:
    return device_hash(PrivacyKit(settings.secret_key), app_id, device_id)


def subscriber_hash_of(settings: Settings, app_id: str, subscriber_id: str) -> str:
    return subscriber_hash(PrivacyKit(settings.secret_key), app_id, subscriber_id)


def assert_erased(erased: dict[str, int], expected: dict[str, int]) -> None:
    """The counts of the kinds named; every other kind is listed, with 0."""
    assert set(erased) >= SUBJECT_KINDS
    assert erased == {kind: expected.get(kind, 0) for kind in erased}


async def verify_with_jwks(client: Client, receipt: str) -> dict[str, Any]:
    """Verify a receipt as an outside party does: the JWKS fetched over HTTP, PyJWT's EdDSA."""
    r = await client.get(JWKS)
    assert r.status_code == 200, r.text
    kid = jwt.get_unverified_header(receipt)["kid"]
    (jwk,) = [key for key in r.json()["keys"] if key["kid"] == kid]
    payload: dict[str, Any] = jwt.decode(
        receipt, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], options={"require": ["iat", "iss"]}
    )
    return payload
