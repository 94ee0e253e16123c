"""POST /api/v1/ios/validate-receipt with StoreKit 2 signed transactions, end to end over HTTP."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.peers.apple_ca import transaction
from tests.storekit.conftest import APP_APPLE_ID, BUNDLE_ID, TestPKI

URL = "/api/v1/ios/validate-receipt"


async def validate(client: Client, app: TenantHandle, token: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(URL, json={"signed_transaction": token, **extra}, headers=app.pk)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_invalid(body: dict[str, Any], reason: str | None = None) -> None:
    assert body["status"] == "invalid"
    assert body["is_active"] is False
    assert body["reason"]
    if reason is not None:
        assert body["reason"] == reason, body


async def test_valid_subscription(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    payload = transaction(BUNDLE_ID, expires_in=timedelta(days=30))
    body = await validate(sk_client, app, pki.trusted.sign(payload))
    assert body["status"] == "valid"
    assert body["is_active"] is True
    assert body["product_id"] == "com.example.pro.monthly"
    assert body["environment"] == "sandbox"
    assert body["tenant"] == "app-a"
    assert "reason" not in body
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert abs(expires.timestamp() * 1000 - payload["expiresDate"]) < 1000


async def test_production_transaction_valid(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    body = await validate(
        sk_client, app, pki.trusted.sign(transaction(BUNDLE_ID, environment="Production"))
    )
    assert body["status"] == "valid"
    assert body["environment"] == "production"


async def test_production_needs_app_apple_id(
    sk_client: Client, make_tenant: TenantFactory, pki: TestPKI
) -> None:
    other = await make_tenant("app-noid", bundle_id=BUNDLE_ID)
    token = pki.trusted.sign(transaction(BUNDLE_ID, environment="Production"))
    assert_invalid(await validate(sk_client, other, token), "app_apple_id_not_configured")
    sandbox = pki.trusted.sign(transaction(BUNDLE_ID, environment="Sandbox"))
    assert (await validate(sk_client, other, sandbox))["status"] == "valid"


async def test_non_consumable_valid_without_expiry(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    payload = transaction(BUNDLE_ID, kind="Non-Consumable", expires_in=None, product_id="lifetime")
    body = await validate(sk_client, app, pki.trusted.sign(payload))
    assert body["status"] == "valid"
    assert body["is_active"] is True
    assert body["expires_at"] is None
    assert body["product_id"] == "lifetime"


async def test_expired_subscription(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    payload = transaction(BUNDLE_ID, expires_in=-timedelta(hours=1))
    body = await validate(sk_client, app, pki.trusted.sign(payload))
    assert body["status"] == "expired"
    assert body["is_active"] is False
    assert body["reason"] == "subscription_expired"
    assert datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")) < datetime.now(UTC)


async def test_revoked_transaction(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    for kind, expires in (
        ("Auto-Renewable Subscription", timedelta(days=3)),
        ("Non-Consumable", None),
    ):
        payload = transaction(BUNDLE_ID, kind=kind, expires_in=expires, revoked=True)
        body = await validate(sk_client, app, pki.trusted.sign(payload))
        assert body["status"] == "revoked"
        assert body["is_active"] is False
        assert body["reason"] == "revoked"


async def test_wrong_bundle_id(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    token = pki.trusted.sign(transaction("com.other.app"))
    assert_invalid(await validate(sk_client, app, token), "wrong_bundle_id")


@pytest.mark.parametrize("environment", ["Xcode", "LocalTesting", "Staging", ""])
async def test_wrong_environment(
    sk_client: Client, app: TenantHandle, pki: TestPKI, environment: str
) -> None:
    """Xcode / LocalTesting data is not signed by Apple: never trusted (the library would skip
    the signature check for them), and unknown environments are refused."""
    token = pki.trusted.sign(transaction(BUNDLE_ID, environment=environment))
    assert_invalid(await validate(sk_client, app, token), "wrong_environment")


async def test_unsigned_xcode_transaction_is_invalid(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(
        json.dumps(transaction(BUNDLE_ID, environment="Xcode")).encode()
    ).rstrip(b"=")
    token = f"{header.decode()}.{payload.decode()}."
    assert_invalid(await validate(sk_client, app, token))


async def test_chain_not_rooted_in_trusted_root(
    sk_client: Client, make_client: ClientFactory, app: TenantHandle, pki: TestPKI
) -> None:
    # a well-formed chain from a root that is not trusted
    assert_invalid(
        await validate(sk_client, app, pki.rogue.sign(transaction(BUNDLE_ID))),
        "certificate_chain_untrusted",
    )
    # only the bundled Apple roots: the test CA is just another untrusted root
    apple_only = await make_client(apple_root_certs_dir=None)
    assert_invalid(
        await validate(apple_only, app, pki.trusted.sign(transaction(BUNDLE_ID))),
        "certificate_chain_untrusted",
    )


async def test_rogue_leaf_under_trusted_x5c_is_invalid(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    """The trusted chain in x5c, but signed with another key: the signature must not verify."""
    token = pki.trusted.sign(transaction(BUNDLE_ID), key=pki.rogue.leaf_key)
    assert_invalid(await validate(sk_client, app, token), "signature_invalid")


async def test_missing_apple_oids(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    """Chains to a trusted root but without Apple's marker extensions on leaf / intermediate."""
    for ca in (pki.no_leaf_oid, pki.no_intermediate_oid):
        assert_invalid(await validate(sk_client, app, ca.sign(transaction(BUNDLE_ID))))


async def test_tampered_payload(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    token = pki.trusted.sign(transaction(BUNDLE_ID, expires_in=-timedelta(days=1)))
    header, _, signature = token.split(".")
    forged = transaction(BUNDLE_ID, expires_in=timedelta(days=365))
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    assert_invalid(await validate(sk_client, app, f"{header}.{body}.{signature}"))


async def test_alg_none(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    header = {"alg": "none", "x5c": pki.trusted.x5c()}
    parts = [
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in (header, transaction(BUNDLE_ID))
    ]
    token = ".".join([*parts, ""])
    assert_invalid(await validate(sk_client, app, token), "unsupported_algorithm")


async def test_hs256_with_public_key_as_secret(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    token = jwt.encode(
        transaction(BUNDLE_ID),
        "not-a-key-material-but-long-enough-for-hs256!!",
        algorithm="HS256",
        headers={"x5c": pki.trusted.x5c()},
    )
    assert_invalid(await validate(sk_client, app, token), "unsupported_algorithm")


async def test_missing_x5c(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    token = jwt.encode(transaction(BUNDLE_ID), pki.trusted.leaf_key, algorithm="ES256")
    assert_invalid(await validate(sk_client, app, token), "missing_certificate_chain")
    empty = pki.trusted.sign(transaction(BUNDLE_ID), x5c=[])
    assert_invalid(await validate(sk_client, app, empty), "missing_certificate_chain")


async def test_two_certificate_chain(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    token = pki.trusted.sign(transaction(BUNDLE_ID), x5c=pki.trusted.x5c()[:2])
    assert_invalid(await validate(sk_client, app, token), "certificate_chain_invalid")


async def test_garbage_x5c_entries(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    token = pki.trusted.sign(transaction(BUNDLE_ID), x5c=["AAAA", "!!notbase64", "Zm9v"])
    assert_invalid(await validate(sk_client, app, token))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "xyz",
        "a.b.c",
        "....",
        "eyJhbGciOiJFUzI1NiJ9.e30.",
        "eyJhbGciOiJFUzI1NiIsIng1YyI6WzEsMiwzXX0.W10.AAAA",  # x5c of ints, payload a list
        "\u00e9\u00e8.\u00e0.\u00fc",
        "A" * 5000,
        "eyJ" * 30 + "." + "e30" + ".sig",
        "null.null.null",
    ],
)
async def test_garbage_strings(
    sk_client: Client, app: TenantHandle, pki: TestPKI, token: str
) -> None:
    assert_invalid(await validate(sk_client, app, token))


async def test_tenant_without_bundle_id(
    sk_client: Client, make_tenant: TenantFactory, pki: TestPKI
) -> None:
    bare = await make_tenant("app-bare")
    token = pki.trusted.sign(transaction(BUNDLE_ID))
    assert_invalid(await validate(sk_client, bare, token), "bundle_id_not_configured")


async def test_another_tenants_transaction_is_invalid(
    sk_client: Client, app: TenantHandle, make_tenant: TenantFactory, pki: TestPKI
) -> None:
    other = await make_tenant("app-b", bundle_id="com.example.other", app_apple_id=APP_APPLE_ID + 1)
    token = pki.trusted.sign(transaction(BUNDLE_ID))
    assert_invalid(await validate(sk_client, other, token), "wrong_bundle_id")
    assert (await validate(sk_client, app, token))["status"] == "valid"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"affiliate_code": "abc"},
        {"signed_transaction": "x", "receipt_data": "y"},
        {"signed_transaction": None, "receipt_data": None},
        {"signed_transaction": 12},
        {"signed_transaction": "x" * (128 * 1024 + 1)},
    ],
)
async def test_exactly_one_proof(
    sk_client: Client, app: TenantHandle, body: dict[str, Any]
) -> None:
    response = await sk_client.post(URL, json=body, headers=app.pk)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"


async def test_requires_a_key(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    token = pki.trusted.sign(transaction(BUNDLE_ID))
    response = await sk_client.post(URL, json={"signed_transaction": token})
    assert response.status_code == 400
    response = await sk_client.post(
        URL, json={"signed_transaction": token}, headers={"X-App-ID": "app-a"}
    )
    assert response.status_code == 401
    assert (await sk_client.post(URL, json={"signed_transaction": token}, headers=app.sk)).json()[
        "status"
    ] == "valid"


async def test_no_receipt_data_stub(sk_client: Client, app: TenantHandle) -> None:
    """The old seed answered {"receipt_data": "xyz"} with `valid`; here Apple says 21002."""
    response = await sk_client.post(URL, json={"receipt_data": "xyz"}, headers=app.pk)
    assert response.status_code == 200
    assert_invalid(response.json(), "malformed_receipt")


def test_roots_dir_fixture_holds_only_test_roots(roots_dir: Path) -> None:
    assert sorted(p.name for p in roots_dir.iterdir()) == ["root-0.pem", "root-1.pem", "root-2.pem"]
