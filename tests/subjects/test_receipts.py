"""Deletion receipts verify against /.well-known/jwks.json with PyJWT and joserfc (never with our
code), name no identifier, fail when tampered with, and survive a SECRET_KEY rotation."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from stateless.config import Settings
from tests.conftest import Client, ClientFactory, TenantFactory
from tests.subjects.conftest import (
    ERASE,
    JWKS,
    make_app,
    register_device,
    subscribe,
    verify_with_jwks,
)

# RFC 9864 (2025) names "Ed25519" the fully specified successor of "EdDSA"; receipts keep
# "EdDSA" (RFC 8037), what SPEC 14 fixes and every JOSE library verifies today.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

DEVICE = "receipt-device-4b1c"
ROTATED_KEY = "a-newer-secret-key-with-more-than-32-characters!!"


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def _subject_receipt(client: Client, make_tenant: TenantFactory) -> dict[str, Any]:
    app = await make_app(make_tenant, "app-a")
    await register_device(client, app, DEVICE)
    await subscribe(client, app, "receipt-subscriber")
    r = await client.post(
        ERASE, headers=app.pk, json={"device_ids": [DEVICE], "subscriber_ids": ["nobody"]}
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_the_jwks_is_public_and_holds_only_public_ed25519_keys(client: Client) -> None:
    r = await client.get(JWKS)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    (key,) = r.json()["keys"]
    assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}  # no private "d"
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert len(_b64d(key["x"])) == 32


async def test_a_subject_receipt_verifies_with_pyjwt_and_joserfc(
    subjects_client: Client, make_tenant: TenantFactory
) -> None:
    body = await _subject_receipt(subjects_client, make_tenant)
    receipt = body["receipt"]

    claims = await verify_with_jwks(subjects_client, receipt)
    keys = (await subjects_client.get(JWKS)).json()
    verified = jws.deserialize_compact(receipt, KeySet.import_key_set(keys), algorithms=["EdDSA"])

    assert json.loads(verified.payload) == claims
    assert verified.protected["alg"] == "EdDSA" and verified.protected["kid"]
    assert set(claims) == {"iss", "app_id", "iat", "scope", "erased", "jti"}
    assert claims["app_id"] == "app-a" and claims["scope"] == "subject"
    assert claims["iss"] == "stateless-backend"
    assert claims["erased"] == body["erased"] and claims["erased"]["device_tokens"] == 1
    assert isinstance(claims["iat"], int) and isinstance(claims["jti"], str)
    # no identifier anywhere in the token, not even in its header
    assert DEVICE not in json.dumps(claims) and "nobody" not in json.dumps(claims)


def _tampered(receipt: str) -> list[str]:
    header, payload, signature = receipt.split(".")
    claims = json.loads(_b64d(payload))
    more = {**claims, "erased": {kind: n + 1 for kind, n in claims["erased"].items()}}
    other_app = {**claims, "app_id": "app-b"}
    flipped = bytes([_b64d(signature)[0] ^ 1]) + _b64d(signature)[1:]
    unsigned = _b64e(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return [
        f"{header}.{_b64e(json.dumps(more).encode())}.{signature}",
        f"{header}.{_b64e(json.dumps(other_app).encode())}.{signature}",
        f"{header}.{payload}.{_b64e(flipped)}",
        f"{unsigned}.{payload}.",
    ]


async def test_a_tampered_receipt_does_not_verify(
    subjects_client: Client, make_tenant: TenantFactory
) -> None:
    receipt = (await _subject_receipt(subjects_client, make_tenant))["receipt"]
    keys = (await subjects_client.get(JWKS)).json()
    key = jwt.PyJWK(keys["keys"][0]).key
    for forged in _tampered(receipt):
        with pytest.raises(jwt.InvalidTokenError):
            jwt.decode(forged, key, algorithms=["EdDSA"])
        with pytest.raises((JoseError, ValueError)):
            jws.deserialize_compact(forged, KeySet.import_key_set(keys), algorithms=["EdDSA"])


async def test_erasing_all_data_returns_a_tenant_receipt(
    subjects_client: Client, make_tenant: TenantFactory
) -> None:
    app = await make_app(make_tenant, "app-a")
    await register_device(subjects_client, app, DEVICE)
    r = await subjects_client.delete("/api/v1/admin/data", headers=app.sk)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "erased" and body["deleted"]["device_tokens"] == 1
    claims = await verify_with_jwks(subjects_client, body["receipt"])
    assert claims["scope"] == "tenant" and claims["app_id"] == "app-a"
    assert claims["erased"] == body["deleted"]


async def test_receipts_signed_before_a_key_rotation_still_verify(
    make_client: ClientFactory, make_tenant: TenantFactory, settings: Settings
) -> None:
    before = await make_client()
    app = await make_app(make_tenant, "app-a")
    old = (await before.delete("/api/v1/admin/data", headers=app.sk)).json()["receipt"]
    after = await make_client(secret_key=ROTATED_KEY, previous_secret_keys=[settings.secret_key])

    keys = (await after.get(JWKS)).json()["keys"]
    new = (await after.delete("/api/v1/admin/data", headers=app.sk)).json()["receipt"]

    assert len(keys) == 2
    assert jwt.get_unverified_header(new)["kid"] == keys[0]["kid"]
    assert jwt.get_unverified_header(old)["kid"] == keys[1]["kid"]
    assert (await verify_with_jwks(after, old))["scope"] == "tenant"
    assert (await verify_with_jwks(after, new))["scope"] == "tenant"
    # The old deployment's key does not verify the new receipt.
    old_key = jwt.PyJWK((await before.get(JWKS)).json()["keys"][0]).key
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(new, old_key, algorithms=["EdDSA"])
