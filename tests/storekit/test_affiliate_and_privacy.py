"""A valid purchase with affiliate_code records one `purchase` conversion; nothing identifying
(transaction ids, receipts, the shared secret) is ever stored or logged."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from stateless.config import Settings
from tests.conftest import Client, ClientFactory, TenantHandle
from tests.peers.apple_ca import notification, now_ms, transaction
from tests.peers.verify_receipt import (
    Scripted,
    VerifyReceiptPeer,
    receipt_entry,
    subscription_receipt,
)
from tests.privacy import assert_not_stored
from tests.storekit.conftest import APP_APPLE_ID, BUNDLE_ID, SHARED_SECRET, TestPKI

VALIDATE = "/api/v1/ios/validate-receipt"


async def new_code(client: Client, app: TenantHandle, code_id: str = "creator-1") -> str:
    response = await client.post(
        "/api/v1/affiliate/generate", json={"code_id": code_id}, headers=app.pk
    )
    assert response.status_code == 200, response.text
    code: str = response.json()["code"]
    return code


async def purchase_totals(client: Client, app: TenantHandle) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/affiliate/stats", headers=app.sk)
    assert response.status_code == 200, response.text
    return [t for t in response.json()["totals"] if t["event"] == "purchase"]


async def test_valid_purchase_records_one_conversion(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    code = await new_code(sk_client, app)
    token = pki.trusted.sign(transaction(BUNDLE_ID, price=9990, currency="EUR"))
    body = {"signed_transaction": token, "affiliate_code": code}
    first = (await sk_client.post(VALIDATE, json=body, headers=app.pk)).json()
    assert first["status"] == "valid"
    assert first["affiliate"] == "recorded"
    again = (await sk_client.post(VALIDATE, json=body, headers=app.pk)).json()
    assert again["status"] == "valid"
    assert again["affiliate"] == "duplicate"
    assert await purchase_totals(sk_client, app) == [
        {"event": "purchase", "currency": "EUR", "count": 1, "value_sum": "9.99"}
    ]


async def test_milli_unit_prices_round_to_the_currency(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    code = await new_code(sk_client, app)
    for price, currency in ((1200000, "JPY"), (4995, "USD")):
        token = pki.trusted.sign(transaction(BUNDLE_ID, price=price, currency=currency))
        body = {"signed_transaction": token, "affiliate_code": code}
        assert (await sk_client.post(VALIDATE, json=body, headers=app.pk)).json()[
            "affiliate"
        ] == "recorded"
    totals = {t["currency"]: t["value_sum"] for t in await purchase_totals(sk_client, app)}
    assert totals == {"JPY": "1200", "USD": "5.00"}


async def test_invalid_code_still_answers_validation(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    token = pki.trusted.sign(transaction(BUNDLE_ID))
    body = {"signed_transaction": token, "affiliate_code": "not-a-real-code"}
    response = await sk_client.post(VALIDATE, json=body, headers=app.pk)
    assert response.status_code == 200
    assert response.json()["status"] == "valid"
    assert response.json()["affiliate"] == "invalid_code"
    assert await purchase_totals(sk_client, app) == []


async def test_no_conversion_for_purchases_that_are_not_valid(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    code = await new_code(sk_client, app)
    for payload in (
        transaction(BUNDLE_ID, expires_in=-timedelta(days=1)),
        transaction(BUNDLE_ID, revoked=True),
        transaction("com.other.app"),
    ):
        body = {"signed_transaction": pki.trusted.sign(payload), "affiliate_code": code}
        answer = (await sk_client.post(VALIDATE, json=body, headers=app.pk)).json()
        assert answer["status"] != "valid"
        assert "affiliate" not in answer
    assert await purchase_totals(sk_client, app) == []


async def test_legacy_purchase_records_count_without_value(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer
) -> None:
    code = await new_code(sk_client, app)
    entry = receipt_entry(
        "3000000001", "3000000001", purchase_ms=now_ms(-timedelta(days=1)), expires_ms=None
    )
    peer.receipts["UFVSQ0hBU0U="] = Scripted(subscription_receipt(BUNDLE_ID, [entry]))
    body = {"receipt_data": "UFVSQ0hBU0U=", "affiliate_code": code}
    answer = (await sk_client.post(VALIDATE, json=body, headers=app.pk)).json()
    assert answer["status"] == "valid"
    assert answer["affiliate"] == "recorded"
    assert await purchase_totals(sk_client, app) == [
        {"event": "purchase", "currency": None, "count": 1, "value_sum": None}
    ]


async def test_nothing_identifying_is_stored_or_logged(
    capsys: pytest.CaptureFixture[str],
    make_client: ClientFactory,
    roots_dir: Path,
    app: TenantHandle,
    pki: TestPKI,
    peer: VerifyReceiptPeer,
    settings: Settings,
) -> None:
    # built during the test, so the app's log handler writes into capsys
    sk_client = await make_client(
        apple_root_certs_dir=roots_dir,
        apple_verify_receipt_url=peer.production_url,
        apple_verify_receipt_sandbox_url=peer.sandbox_url,
    )
    code = await new_code(sk_client, app)
    # StoreKit 2: validate (with a conversion), then a refund notification, then a replay
    tx = transaction(
        BUNDLE_ID,
        transaction_id="7100000123456789",
        original_transaction_id="7100000000000042",
    )
    token = pki.trusted.sign(tx)
    answer = await sk_client.post(
        VALIDATE, json={"signed_transaction": token, "affiliate_code": code}, headers=app.pk
    )
    assert answer.json()["affiliate"] == "recorded"
    signed = pki.trusted.sign(
        notification(
            BUNDLE_ID,
            "REFUND",
            signed_transaction=token,
            app_apple_id=APP_APPLE_ID,
            notification_uuid="5d2f8d4e-1111-4c7b-9a77-2b9f0e6c0c01",
        )
    )
    for _ in range(2):
        response = await sk_client.post(
            "/api/v1/ios/notifications/app-a", json={"signedPayload": signed}
        )
        assert response.status_code == 200
    assert (
        await sk_client.post(VALIDATE, json={"signed_transaction": token}, headers=app.pk)
    ).json()["status"] == "revoked"

    # legacy: a receipt with its own ids, a sandbox retry, and a failing one
    receipt = "TUlJVFlRWUpLb1pJaHZjTkFRY0NvSUlUeXpDQ0U4Y0NBUUV4Q3pBSkJnVXJEZ0lEQmdVQUE="
    entry = receipt_entry(
        "7200000987654321",
        "7200000000000077",
        purchase_ms=now_ms(-timedelta(days=1)),
        expires_ms=now_ms(timedelta(days=29)),
    )
    peer.receipts[receipt] = Scripted(
        {"status": 21007}, subscription_receipt(BUNDLE_ID, [entry], environment="Sandbox")
    )
    legacy = await sk_client.post(
        VALIDATE, json={"receipt_data": receipt, "affiliate_code": code}, headers=app.pk
    )
    assert legacy.json()["status"] == "valid"
    assert legacy.json()["affiliate"] == "recorded"
    assert (
        await sk_client.post(VALIDATE, json={"receipt_data": "b3RoZXJyZWNlaXB0"}, headers=app.pk)
    ).json()["status"] == "invalid"

    logs = capsys.readouterr()
    # the app's log lines (stdout); stderr only carries pytest's own capture noise
    assert "/api/v1/ios/validate-receipt" in logs.out
    assert "/api/v1/ios/notifications/{app_id}" in logs.out
    dump = await assert_not_stored(
        settings,
        [
            "7100000123456789",
            "7100000000000042",
            "7200000987654321",
            "7200000000000077",
            "5d2f8d4e-1111-4c7b-9a77-2b9f0e6c0c01",
            receipt,
            "b3RoZXJyZWNlaXB0",
            SHARED_SECRET,
            token[:200],
            token.split(".")[1][:120],
        ],
        logs=logs.out,
    )
    # the refund was recorded (as hashes) and the notification once
    assert "storekit_entitlements" in dump
    assert "REFUND" in dump
