"""Legacy receipts through a local verifyReceipt-compatible peer (production, then sandbox)."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.peers.apple_ca import now_ms
from tests.peers.verify_receipt import (
    PRODUCTION_PATH,
    SANDBOX_PATH,
    Scripted,
    VerifyReceiptPeer,
    receipt_entry,
    subscription_receipt,
)
from tests.storekit.conftest import BUNDLE_ID, SHARED_SECRET

URL = "/api/v1/ios/validate-receipt"
DAY = timedelta(days=1)


async def post_receipt(client: Client, app: TenantHandle, receipt: str) -> Any:
    return await client.post(URL, json={"receipt_data": receipt}, headers=app.pk)


def two_periods(latest_expires: timedelta) -> list[dict[str, Any]]:
    """An older period and the latest one (listed first, so order alone cannot decide)."""
    return [
        receipt_entry(
            "1000000002",
            "1000000001",
            purchase_ms=now_ms(latest_expires - 30 * DAY),
            expires_ms=now_ms(latest_expires),
        ),
        receipt_entry(
            "1000000001",
            "1000000001",
            purchase_ms=now_ms(latest_expires - 60 * DAY),
            expires_ms=now_ms(latest_expires - 30 * DAY),
        ),
    ][::-1]


async def test_status_0_latest_active_is_valid(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer
) -> None:
    peer.receipts["UkVDRUlQVC1BQ1RJVkU="] = Scripted(
        subscription_receipt(BUNDLE_ID, two_periods(10 * DAY))
    )
    response = await post_receipt(sk_client, app, "UkVDRUlQVC1BQ1RJVkU=")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "valid"
    assert body["is_active"] is True
    assert body["environment"] == "production"
    assert body["product_id"] == "com.example.pro.monthly"
    assert body["tenant"] == "app-a"
    # the shared secret went to Apple (only there), production first, no sandbox call
    assert [(path, sent.get("password")) for path, sent in peer.requests] == [
        (PRODUCTION_PATH, SHARED_SECRET)
    ]
    assert peer.requests[0][1]["receipt-data"] == "UkVDRUlQVC1BQ1RJVkU="


async def test_status_0_latest_lapsed_is_expired(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer
) -> None:
    peer.receipts["UkVDRUlQVC1FWFBJUkVE"] = Scripted(
        subscription_receipt(BUNDLE_ID, two_periods(-2 * DAY))
    )
    body = (await post_receipt(sk_client, app, "UkVDRUlQVC1FWFBJUkVE")).json()
    assert body["status"] == "expired"
    assert body["is_active"] is False
    assert body["reason"] == "subscription_expired"


async def test_grace_period_keeps_access(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer
) -> None:
    peer.receipts["R1JBQ0U="] = Scripted(
        subscription_receipt(
            BUNDLE_ID,
            two_periods(-DAY),
            pending_renewal_info=[
                {
                    "original_transaction_id": "1000000001",
                    "product_id": "com.example.pro.monthly",
                    "is_in_billing_retry_period": "1",
                    "grace_period_expires_date_ms": str(now_ms(5 * DAY)),
                }
            ],
        )
    )
    body = (await post_receipt(sk_client, app, "R1JBQ0U=")).json()
    assert body["status"] == "valid"
    assert body["is_active"] is True
    assert body["grace_period_expires_at"]


async def test_cancelled_transaction_is_revoked(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer
) -> None:
    entry = receipt_entry(
        "1000000009",
        "1000000009",
        product_id="lifetime",
        purchase_ms=now_ms(-DAY),
        expires_ms=None,
        cancelled_ms=now_ms(-timedelta(hours=1)),
    )
    peer.receipts["UkVGVU5E"] = Scripted(subscription_receipt(BUNDLE_ID, [entry]))
    body = (await post_receipt(sk_client, app, "UkVGVU5E")).json()
    assert body["status"] == "revoked"
    assert body["product_id"] == "lifetime"


async def test_21007_retries_against_sandbox(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer
) -> None:
    peer.receipts["U0FOREJPWA=="] = Scripted(
        production={"status": 21007},
        sandbox=subscription_receipt(BUNDLE_ID, two_periods(3 * DAY), environment="Sandbox"),
    )
    body = (await post_receipt(sk_client, app, "U0FOREJPWA==")).json()
    assert body["status"] == "valid"
    assert body["environment"] == "sandbox"
    assert [path for path, _ in peer.requests] == [PRODUCTION_PATH, SANDBOX_PATH]
    assert all(sent["password"] == SHARED_SECRET for _, sent in peer.requests)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (21000, "malformed_request"),
        (21002, "malformed_receipt"),
        (21003, "receipt_not_authenticated"),
        (21004, "shared_secret_mismatch"),
        (21005, "apple_server_unavailable"),
        (21008, "production_receipt"),
        (21009, "apple_internal_error"),
        (21010, "account_not_found"),
        (21150, "apple_internal_error"),
        (99999, "unknown_apple_status"),
    ],
)
async def test_error_statuses_are_invalid(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer, status: int, reason: str
) -> None:
    peer.receipts["RVJST1I="] = Scripted({"status": status})
    response = await post_receipt(sk_client, app, "RVJST1I=")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "invalid"
    assert body["is_active"] is False
    assert body["reason"] == reason


async def test_wrong_shared_secret_is_invalid(
    sk_client: Client, make_tenant: TenantFactory, peer: VerifyReceiptPeer
) -> None:
    other = await make_tenant(
        "app-wrong-secret", bundle_id=BUNDLE_ID, appstore_shared_secret="not-the-secret"
    )
    peer.receipts["U0VDUkVU"] = Scripted(subscription_receipt(BUNDLE_ID, two_periods(DAY)))
    body = (await post_receipt(sk_client, other, "U0VDUkVU")).json()
    assert body["status"] == "invalid"
    assert body["reason"] == "shared_secret_mismatch"


async def test_receipt_of_another_bundle_is_invalid(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer
) -> None:
    peer.receipts["T1RIRVI="] = Scripted(subscription_receipt("com.other.app", two_periods(DAY)))
    body = (await post_receipt(sk_client, app, "T1RIRVI=")).json()
    assert body["status"] == "invalid"
    assert body["reason"] == "wrong_bundle_id"


async def test_tenant_without_bundle_id_never_calls_apple(
    sk_client: Client, make_tenant: TenantFactory, peer: VerifyReceiptPeer
) -> None:
    bare = await make_tenant("app-bare")
    body = (await post_receipt(sk_client, bare, "Tk9CVU5ETEU=")).json()
    assert body["status"] == "invalid"
    assert body["reason"] == "bundle_id_not_configured"
    assert peer.requests == []


async def test_seed_stub_xyz_is_not_valid(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer
) -> None:
    body = (await post_receipt(sk_client, app, "xyz")).json()
    assert body["status"] == "invalid"
    assert body["reason"] == "malformed_receipt"
    assert [path for path, _ in peer.requests] == [PRODUCTION_PATH]


async def test_non_json_answer_is_502(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer
) -> None:
    peer.receipts["SFRNTA=="] = Scripted(b"<html>maintenance</html>")
    response = await post_receipt(sk_client, app, "SFRNTA==")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "provider_error"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_peer_down_is_502_never_valid(make_client: ClientFactory, app: TenantHandle) -> None:
    port = _closed_port()
    client = await make_client(
        apple_verify_receipt_url=f"http://127.0.0.1:{port}/verifyReceipt",
        apple_verify_receipt_sandbox_url=f"http://127.0.0.1:{port}/sandbox/verifyReceipt",
    )
    response = await post_receipt(client, app, "xyz")
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "provider_error"
    assert body["request_id"]
    assert SHARED_SECRET not in response.text


async def test_http_error_from_apple_is_502(
    make_client: ClientFactory, app: TenantHandle, peer: VerifyReceiptPeer
) -> None:
    client = await make_client(
        apple_verify_receipt_url=f"http://127.0.0.1:{peer.port}/not-verify-receipt",
        apple_verify_receipt_sandbox_url=peer.sandbox_url,
    )
    response = await post_receipt(client, app, "SFRUUEVSUk9S")
    assert response.status_code == 502
    assert response.json()["code"] == "provider_error"
    assert "404" in response.json()["detail"]
