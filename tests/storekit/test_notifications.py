"""App Store Server Notifications V2 change what validate-receipt answers."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from stateless.config import Settings
from tests.conftest import Client, TenantFactory, TenantHandle
from tests.peers.apple_ca import TestAppleCA, notification, now_ms, renewal_info, transaction
from tests.peers.verify_receipt import (
    Scripted,
    VerifyReceiptPeer,
    receipt_entry,
    subscription_receipt,
)
from tests.storekit.conftest import APP_APPLE_ID, BUNDLE_ID, TestPKI, count_rows

VALIDATE = "/api/v1/ios/validate-receipt"
ENTITLEMENTS = "storekit_entitlements"
RECEIPTS = "storekit_notification_receipts"


def notify_url(app_id: str = "app-a") -> str:
    return f"/api/v1/ios/notifications/{app_id}"


async def send(client: Client, signed_payload: str, app_id: str = "app-a") -> Any:
    return await client.post(notify_url(app_id), json={"signedPayload": signed_payload})


def signed_notification(
    ca: TestAppleCA,
    kind: str,
    tx: dict[str, Any],
    *,
    renewal: dict[str, Any] | None = None,
    subtype: str | None = None,
    bundle_id: str = BUNDLE_ID,
    notification_uuid: str | None = None,
    signed_date: int | None = None,
) -> str:
    payload = notification(
        bundle_id,
        kind,
        signed_transaction=ca.sign(tx),
        signed_renewal=ca.sign(renewal) if renewal else None,
        subtype=subtype,
        environment=tx["environment"],
        app_apple_id=APP_APPLE_ID,
        notification_uuid=notification_uuid,
    )
    if signed_date is not None:
        payload["signedDate"] = signed_date
    return ca.sign(payload)


async def validate(client: Client, app: TenantHandle, token: str) -> dict[str, Any]:
    response = await client.post(VALIDATE, json={"signed_transaction": token}, headers=app.pk)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_refund_then_validate_is_revoked(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    tx = transaction(BUNDLE_ID, expires_in=timedelta(days=20))
    app_token = pki.trusted.sign(tx)  # what the app keeps sending: signed before the refund
    assert (await validate(sk_client, app, app_token))["status"] == "valid"

    refunded = dict(tx, revocationDate=now_ms(), revocationReason=1)
    response = await send(sk_client, signed_notification(pki.trusted, "REFUND", refunded))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "processed", "notification_type": "REFUND"}

    body = await validate(sk_client, app, app_token)
    assert body["status"] == "revoked"
    assert body["is_active"] is False
    assert body["reason"] == "refund"
    assert await count_rows(settings, ENTITLEMENTS) == 1
    assert await count_rows(settings, RECEIPTS) == 1


async def test_revoke_applies_to_later_transactions_of_same_original(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    first = transaction(BUNDLE_ID, kind="Non-Consumable", expires_in=None)
    await send(sk_client, signed_notification(pki.trusted, "REVOKE", first))
    restored = transaction(
        BUNDLE_ID,
        kind="Non-Consumable",
        expires_in=None,
        original_transaction_id=first["originalTransactionId"],
    )
    body = await validate(sk_client, app, pki.trusted.sign(restored))
    assert body["status"] == "revoked"
    assert body["reason"] == "revoke"


async def test_refund_reversed_restores(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    tx = transaction(BUNDLE_ID, kind="Non-Consumable", expires_in=None)
    await send(sk_client, signed_notification(pki.trusted, "REFUND", tx))
    assert (await validate(sk_client, app, pki.trusted.sign(tx)))["status"] == "revoked"
    await send(sk_client, signed_notification(pki.trusted, "REFUND_REVERSED", tx))
    assert (await validate(sk_client, app, pki.trusted.sign(tx)))["status"] == "valid"


async def test_refund_also_revokes_legacy_receipt(
    sk_client: Client, app: TenantHandle, pki: TestPKI, peer: VerifyReceiptPeer
) -> None:
    tx = transaction(BUNDLE_ID, expires_in=timedelta(days=20), environment="Production")
    entry = receipt_entry(
        tx["transactionId"],
        tx["originalTransactionId"],
        purchase_ms=now_ms(-timedelta(days=10)),
        expires_ms=tx["expiresDate"],
    )
    peer.receipts["TEVHQUNZ"] = Scripted(subscription_receipt(BUNDLE_ID, [entry]))
    legacy = {"receipt_data": "TEVHQUNZ"}
    assert (await sk_client.post(VALIDATE, json=legacy, headers=app.pk)).json()["status"] == "valid"
    assert (
        await send(sk_client, signed_notification(pki.trusted, "REFUND", tx))
    ).status_code == 200
    body = (await sk_client.post(VALIDATE, json=legacy, headers=app.pk)).json()
    assert body["status"] == "revoked"


async def test_expired_notification(sk_client: Client, app: TenantHandle, pki: TestPKI) -> None:
    tx = transaction(BUNDLE_ID, expires_in=timedelta(days=2))
    token = pki.trusted.sign(tx)
    await send(sk_client, signed_notification(pki.trusted, "EXPIRED", tx, subtype="VOLUNTARY"))
    body = await validate(sk_client, app, token)
    assert body["status"] == "expired"
    assert body["is_active"] is False
    assert body["reason"] == "expired"


async def test_grace_period_keeps_access_until_it_ends(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    tx = transaction(BUNDLE_ID, expires_in=-timedelta(hours=2))
    token = pki.trusted.sign(tx)
    assert (await validate(sk_client, app, token))["status"] == "expired"
    renewal = renewal_info(tx["originalTransactionId"], grace_for=timedelta(days=6))
    response = await send(
        sk_client,
        signed_notification(
            pki.trusted, "DID_FAIL_TO_RENEW", tx, renewal=renewal, subtype="GRACE_PERIOD"
        ),
    )
    assert response.json()["status"] == "processed"
    body = await validate(sk_client, app, token)
    assert body["status"] == "valid"
    assert body["is_active"] is True
    assert body["grace_period_expires_at"]

    # and GRACE_PERIOD_EXPIRED ends it
    await send(sk_client, signed_notification(pki.trusted, "GRACE_PERIOD_EXPIRED", tx))
    body = await validate(sk_client, app, token)
    assert body["status"] == "expired"
    assert body["reason"] == "grace_period_expired"


async def test_fail_to_renew_without_grace_period(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    tx = transaction(BUNDLE_ID, expires_in=-timedelta(hours=1))
    renewal = renewal_info(tx["originalTransactionId"])
    await send(
        sk_client, signed_notification(pki.trusted, "DID_FAIL_TO_RENEW", tx, renewal=renewal)
    )
    body = await validate(sk_client, app, pki.trusted.sign(tx))
    assert body["status"] == "expired"
    assert body["is_active"] is False


async def test_did_renew_extends_an_older_proof(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    old = transaction(BUNDLE_ID, expires_in=-timedelta(hours=1))
    old_token = pki.trusted.sign(old)
    assert (await validate(sk_client, app, old_token))["status"] == "expired"
    renewed = transaction(
        BUNDLE_ID,
        expires_in=timedelta(days=30),
        original_transaction_id=old["originalTransactionId"],
    )
    await send(sk_client, signed_notification(pki.trusted, "DID_RENEW", renewed))
    body = await validate(sk_client, app, old_token)
    assert body["status"] == "valid"
    assert body["is_active"] is True


async def test_out_of_order_delivery_keeps_newest(
    sk_client: Client, app: TenantHandle, pki: TestPKI
) -> None:
    tx = transaction(BUNDLE_ID, expires_in=timedelta(days=10))
    newer = signed_notification(pki.trusted, "DID_RENEW", tx, signed_date=now_ms())
    older = signed_notification(pki.trusted, "EXPIRED", tx, signed_date=now_ms(-timedelta(days=1)))
    assert (await send(sk_client, newer)).json()["status"] == "processed"
    assert (await send(sk_client, older)).json()["status"] == "processed"
    assert (await validate(sk_client, app, pki.trusted.sign(tx)))["status"] == "valid"


async def test_replay_is_idempotent(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    tx = transaction(BUNDLE_ID)
    token = signed_notification(pki.trusted, "REFUND", tx, notification_uuid=str(uuid.uuid4()))
    first = await send(sk_client, token)
    again = await send(sk_client, token)
    assert first.json()["status"] == "processed"
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "notification_type": "REFUND"}
    assert await count_rows(settings, RECEIPTS) == 1
    assert await count_rows(settings, ENTITLEMENTS) == 1


async def test_other_types_are_acknowledged_and_ignored(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    tx = transaction(BUNDLE_ID)
    response = await send(
        sk_client, signed_notification(pki.trusted, "SUBSCRIBED", tx, subtype="INITIAL_BUY")
    )
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "notification_type": "SUBSCRIBED"}
    assert await count_rows(settings, ENTITLEMENTS) == 0
    assert (await validate(sk_client, app, pki.trusted.sign(tx)))["status"] == "valid"


async def _assert_rejected(response: Any, settings: Settings, reason: str | None = None) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert body["code"] == "invalid_signed_payload"
    if reason is not None:
        assert body["reason"] == reason
    assert await count_rows(settings, ENTITLEMENTS) == 0
    assert await count_rows(settings, RECEIPTS) == 0


async def test_wrong_bundle_rejected_nothing_recorded(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    tx = transaction("com.other.app")
    token = signed_notification(pki.trusted, "REFUND", tx, bundle_id="com.other.app")
    await _assert_rejected(await send(sk_client, token), settings, "wrong_bundle_id")


async def test_wrong_bundle_in_nested_transaction_rejected(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    tx = transaction("com.other.app")
    token = signed_notification(pki.trusted, "REFUND", tx, bundle_id=BUNDLE_ID)
    await _assert_rejected(await send(sk_client, token), settings, "wrong_bundle_id")


async def test_bad_chain_rejected_nothing_recorded(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    tx = transaction(BUNDLE_ID)
    token = signed_notification(pki.rogue, "REFUND", tx)
    await _assert_rejected(await send(sk_client, token), settings, "certificate_chain_untrusted")
    two = pki.trusted.sign(
        notification(BUNDLE_ID, "REFUND", signed_transaction=pki.trusted.sign(tx)),
        x5c=pki.trusted.x5c()[:2],
    )
    await _assert_rejected(await send(sk_client, two), settings, "certificate_chain_invalid")


async def test_wrong_environment_rejected(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    tx = transaction(BUNDLE_ID, environment="Xcode")
    token = signed_notification(pki.trusted, "REFUND", tx)
    await _assert_rejected(await send(sk_client, token), settings, "wrong_environment")
    # outer says Sandbox, nested transaction says Production
    mixed = pki.trusted.sign(
        notification(
            BUNDLE_ID,
            "REFUND",
            signed_transaction=pki.trusted.sign(transaction(BUNDLE_ID, environment="Production")),
            environment="Sandbox",
        )
    )
    await _assert_rejected(await send(sk_client, mixed), settings, "wrong_environment")


async def test_production_notification_needs_matching_app_apple_id(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    tx = transaction(BUNDLE_ID, environment="Production")
    payload = notification(
        BUNDLE_ID,
        "REFUND",
        signed_transaction=pki.trusted.sign(tx),
        environment="Production",
        app_apple_id=APP_APPLE_ID + 1,
    )
    await _assert_rejected(
        await send(sk_client, pki.trusted.sign(payload)), settings, "wrong_bundle_id"
    )
    ok = signed_notification(pki.trusted, "REFUND", tx)
    assert (await send(sk_client, ok)).json()["status"] == "processed"


@pytest.mark.parametrize("payload", ["", "garbage", "a.b.c", "e30.e30.e30", "x" * 1000])
async def test_garbage_payload_rejected(
    sk_client: Client, app: TenantHandle, settings: Settings, payload: str
) -> None:
    await _assert_rejected(await send(sk_client, payload), settings)


async def test_body_schema(sk_client: Client, app: TenantHandle) -> None:
    response = await sk_client.post(notify_url(), json={"payload": "x"})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_unknown_app_answers_like_an_unverifiable_payload(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    """SPEC 5: no tenant enumeration; a genuine payload of another app id is refused alike."""
    token = signed_notification(pki.trusted, "REFUND", transaction(BUNDLE_ID))
    response = await send(sk_client, token, app_id="no-such-app")
    await _assert_rejected(response, settings, "wrong_bundle_id")


@pytest.mark.parametrize(
    ("app_id", "detail"),
    [("a" * 65, "too long"), ("app%20id", "Invalid tenant ID format"), ("a;drop", "Invalid")],
)
async def test_bad_app_id_is_400(
    sk_client: Client, app: TenantHandle, app_id: str, detail: str
) -> None:
    response = await sk_client.post(notify_url(app_id), json={"signedPayload": "x"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_app_id"
    assert detail in response.json()["detail"]


async def test_notification_for_one_app_does_not_touch_another(
    sk_client: Client, app: TenantHandle, make_tenant: TenantFactory, pki: TestPKI
) -> None:
    other = await make_tenant("app-b", bundle_id=BUNDLE_ID, app_apple_id=APP_APPLE_ID)
    tx = transaction(BUNDLE_ID, kind="Non-Consumable", expires_in=None)
    assert (
        await send(sk_client, signed_notification(pki.trusted, "REFUND", tx))
    ).status_code == 200
    assert (await validate(sk_client, app, pki.trusted.sign(tx)))["status"] == "revoked"
    assert (await validate(sk_client, other, pki.trusted.sign(tx)))["status"] == "valid"


async def test_rate_limited_per_app(
    make_client: Any, roots_dir: Any, app: TenantHandle, pki: TestPKI
) -> None:
    client = await make_client(apple_root_certs_dir=roots_dir, rate_limit_default="2/minute")
    codes = [(await send(client, "garbage")).status_code for _ in range(3)]
    assert codes == [400, 400, 429]
    limited = await send(client, "garbage")
    assert limited.headers["Retry-After"]


async def test_concurrent_replays_never_answer_500(
    sk_client: Client, app: TenantHandle, pki: TestPKI, settings: Settings
) -> None:
    """Apple may deliver the same notification twice at once: one is processed, the others
    are duplicates or a 409 to retry (Apple retries), and the row is recorded once."""
    import asyncio

    tx = transaction(BUNDLE_ID)
    token = signed_notification(pki.trusted, "REFUND", tx, notification_uuid=str(uuid.uuid4()))
    answers = await asyncio.gather(*(send(sk_client, token) for _ in range(12)))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 409}, statuses
    bodies = [a.json() for a in answers if a.status_code == 200]
    assert sum(b["status"] == "processed" for b in bodies) == 1
    for conflict in (a for a in answers if a.status_code == 409):
        assert conflict.json()["code"] == "concurrent_write"
        assert conflict.headers["retry-after"] == "1"
    assert await count_rows(settings, RECEIPTS) == 1
    assert await count_rows(settings, ENTITLEMENTS) == 1
