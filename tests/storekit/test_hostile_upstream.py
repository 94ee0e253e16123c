"""Numbers and shapes from Apple that no real answer has: `invalid`, never a 500; and the
notification endpoint answers an unknown app id exactly as a known one (SPEC 5)."""

from __future__ import annotations

from typing import Any

import pytest

from stateless.config import Settings
from tests.conftest import Client, TenantFactory, TenantHandle
from tests.peers.apple_ca import transaction
from tests.peers.verify_receipt import (
    Scripted,
    VerifyReceiptPeer,
    receipt_entry,
    subscription_receipt,
)
from tests.storekit.conftest import BUNDLE_ID, TestPKI
from tests.storekit.test_notifications import send, signed_notification
from tests.support import count_rows
from tests.test_core import assert_problem

URL = "/api/v1/ios/validate-receipt"
STORED = ("storekit_entitlements", "storekit_notification_receipts", "affiliate_aggregates")


async def assert_nothing_stored(settings: Settings) -> None:
    for table in STORED:
        assert await count_rows(settings, table) == 0, table


@pytest.mark.parametrize(
    "expires",
    [
        "99999999999999999999",
        10**30,
        "253402300800000",  # year 10000
        -5,
        "-1",
        1e300,
        "1" * 5000,
        "12.5",
    ],
)
async def test_out_of_range_expires_date_ms_is_invalid(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer, settings: Settings, expires: Any
) -> None:
    entry = receipt_entry("1000000001", "1000000001", purchase_ms=1_700_000_000_000, expires_ms=1)
    entry["expires_date_ms"] = expires
    peer.receipts["SE9TVElMRQ=="] = Scripted(subscription_receipt(BUNDLE_ID, [entry]))
    code = (
        await sk_client.post("/api/v1/affiliate/generate", headers=app.pk, json={"code_id": "u"})
    ).json()["code"]
    r = await sk_client.post(
        URL, json={"receipt_data": "SE9TVElMRQ==", "affiliate_code": code}, headers=app.pk
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "invalid"
    assert body["reason"] == "unreadable_receipt"
    await assert_nothing_stored(settings)


@pytest.mark.parametrize("field", ["product_id", "transaction_id"])
async def test_identifiers_of_the_wrong_type_do_not_break_the_answer(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer, field: str
) -> None:
    entry = receipt_entry(
        "1000000001", "1000000001", purchase_ms=1_700_000_000_000, expires_ms=None
    )
    entry[field] = {"nested": ["odd"]}
    peer.receipts["T0REVFlQRQ=="] = Scripted(subscription_receipt(BUNDLE_ID, [entry]))
    r = await sk_client.post(URL, json={"receipt_data": "T0REVFlQRQ=="}, headers=app.pk)
    assert r.status_code == 200, r.text


async def test_nesting_past_the_parser_is_a_provider_error(
    sk_client: Client, app: TenantHandle, peer: VerifyReceiptPeer, settings: Settings
) -> None:
    peer.receipts["REVFUA=="] = Scripted(b"[" * 100_000 + b"]" * 100_000)
    r = await sk_client.post(URL, json={"receipt_data": "REVFUA=="}, headers=app.pk)
    assert_problem(r, 502, "provider_error")
    await assert_nothing_stored(settings)


@pytest.mark.parametrize(
    "fields", [{"expiresDate": 10**20}, {"expiresDate": -1}, {"revocationDate": 10**19}]
)
async def test_signed_transaction_dates_out_of_range_are_invalid(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings, fields: dict[str, int]
) -> None:
    payload = {**transaction(BUNDLE_ID), **fields}
    r = await sk_client.post(
        URL, json={"signed_transaction": pki.trusted.sign(payload)}, headers=app.pk
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "invalid"
    await assert_nothing_stored(settings)


async def test_absurd_signed_price_records_no_value(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    code = (
        await sk_client.post("/api/v1/affiliate/generate", headers=app.pk, json={"code_id": "u"})
    ).json()["code"]
    token = pki.trusted.sign(transaction(BUNDLE_ID, price=10**40, currency="USD"))
    r = await sk_client.post(
        URL, json={"signed_transaction": token, "affiliate_code": code}, headers=app.pk
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "valid"
    stats = (await sk_client.get("/api/v1/affiliate/stats", headers=app.sk)).json()
    assert stats["totals"] == [
        {"event": "purchase", "currency": None, "count": 1, "value_sum": None}
    ]


# -- SPEC 5: no tenant enumeration through the notification endpoint ----------------------------


def _comparable(response: Any) -> tuple[int, dict[str, Any]]:
    body = dict(response.json())
    body.pop("request_id", None)
    return response.status_code, body


async def test_unknown_app_answers_exactly_like_a_known_one(
    sk_client: Client,
    app: TenantHandle,
    make_tenant: TenantFactory,
    pki: TestPKI,
    settings: Settings,
) -> None:
    await make_tenant("bare")  # known, nothing configured
    payloads = [
        signed_notification(pki.rogue, "REFUND", transaction(BUNDLE_ID)),
        signed_notification(
            pki.trusted, "REFUND", transaction("com.other.app"), bundle_id="com.other.app"
        ),
        "garbage",
        "e30.e30.e30",
    ]
    for payload in payloads:
        known = await send(sk_client, payload, app_id="app-a")
        assert_problem(known, 400, "invalid_signed_payload")
        unknown = await send(sk_client, payload, app_id="no-such-app")
        bare = await send(sk_client, payload, app_id="bare")
        assert _comparable(unknown) == _comparable(known)
        assert _comparable(bare) == _comparable(known)
    await assert_nothing_stored(settings)
