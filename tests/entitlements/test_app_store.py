"""App Store purchases become entitlements: the device's transactions, notifications in and out
of order, and reconciliation through the App Store Server API peer (both databases)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from tests.conftest import Client, TenantHandle
from tests.entitlements.conftest import BUNDLE_ID, MONTHLY, check
from tests.peers.apple_ca import TestAppleCA, notification, now_ms, renewal_info, transaction
from tests.support import sql


def purchase(token: str | None, **kw: Any) -> dict[str, Any]:
    tx = transaction(BUNDLE_ID, product_id=MONTHLY, **kw)
    if token is not None:
        tx["appAccountToken"] = token
    return tx


async def send_tx(
    client: Client, shop: TenantHandle, ca: TestAppleCA, tx: dict[str, Any], **body: Any
) -> Any:
    return await client.post(
        "/api/v1/entitlements/transactions",
        headers=shop.pk,
        json={"signed_transaction": ca.sign(tx), **body},
    )


async def notify(
    client: Client,
    shop: TenantHandle,
    ca: TestAppleCA,
    kind: str,
    tx: dict[str, Any],
    *,
    subtype: str | None = None,
    renewal: dict[str, Any] | None = None,
    signed_date: int | None = None,
    uuid_: str | None = None,
) -> Any:
    payload = notification(
        BUNDLE_ID,
        kind,
        signed_transaction=ca.sign(tx),
        signed_renewal=ca.sign(renewal) if renewal is not None else None,
        subtype=subtype,
        notification_uuid=uuid_,
    )
    if signed_date is not None:
        payload["signedDate"] = signed_date
    answer = await client.post(
        f"/api/v1/ios/notifications/{shop.app_id}", json={"signedPayload": ca.sign(payload)}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_purchase_on_the_device_grants_pro(
    ent_client: Client, shop: TenantHandle, apple_ca: TestAppleCA
) -> None:
    token = str(uuid.uuid4())
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is False
    answer = await send_tx(ent_client, shop, apple_ca, purchase(token))
    assert answer.status_code == 200, answer.text
    pro = answer.json()["entitlements"]["pro"]
    assert pro["is_active"] is True and pro["store"] == "app_store"
    assert pro["product_id"] == MONTHLY and pro["environment"] == "sandbox"
    checked = await check(ent_client, shop, token)
    assert checked["pro"]["is_active"] is True
    assert checked["lifetime"] == {
        "is_active": False,
        "expires_at": None,
        "grace_period_expires_at": None,
        "product_id": None,
        "store": None,
        "will_renew": False,
        "period_type": None,
        "purchased_at": None,
        "environment": None,
    }


async def test_subject_mismatch_and_missing_subject(
    ent_client: Client, shop: TenantHandle, apple_ca: TestAppleCA
) -> None:
    token = str(uuid.uuid4())
    clash = await send_tx(
        ent_client, shop, apple_ca, purchase(token), app_account_token=str(uuid.uuid4())
    )
    assert clash.status_code == 409 and clash.json()["code"] == "subject_mismatch"
    missing = await send_tx(ent_client, shop, apple_ca, purchase(None))
    assert missing.status_code == 422
    legacy = await send_tx(
        ent_client, shop, apple_ca, purchase(None), app_account_token=token.upper()
    )
    assert legacy.status_code == 200 and legacy.json()["entitlements"]["pro"]["is_active"]


async def test_notifications_walk_the_state_machine(
    ent_client: Client, shop: TenantHandle, apple_ca: TestAppleCA
) -> None:
    token = str(uuid.uuid4())
    tx = purchase(token)
    original = tx["originalTransactionId"]
    await notify(ent_client, shop, apple_ca, "SUBSCRIBED", tx, subtype="INITIAL_BUY")
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is True

    off = renewal_info(original)
    off["autoRenewStatus"] = 0
    await notify(
        ent_client,
        shop,
        apple_ca,
        "DID_CHANGE_RENEWAL_STATUS",
        tx,
        subtype="AUTO_RENEW_DISABLED",
        renewal=off,
    )
    pro = (await check(ent_client, shop, token))["pro"]
    assert pro["is_active"] is True and pro["will_renew"] is False

    # billing issue with grace: active until the grace end
    lapsed = dict(tx, expiresDate=now_ms(-timedelta(hours=1)))
    grace = renewal_info(original, grace_for=timedelta(days=3))
    await notify(
        ent_client,
        shop,
        apple_ca,
        "DID_FAIL_TO_RENEW",
        lapsed,
        subtype="GRACE_PERIOD",
        renewal=grace,
    )
    pro = (await check(ent_client, shop, token))["pro"]
    assert pro["is_active"] is True and pro["grace_period_expires_at"] is not None

    await notify(ent_client, shop, apple_ca, "EXPIRED", lapsed, subtype="VOLUNTARY")
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is False

    renewed = dict(tx, expiresDate=now_ms(timedelta(days=30)))
    await notify(ent_client, shop, apple_ca, "DID_RENEW", renewed)
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is True

    await notify(ent_client, shop, apple_ca, "REFUND", dict(renewed, revocationDate=now_ms()))
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is False

    await notify(ent_client, shop, apple_ca, "REFUND_REVERSED", renewed)
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is True


async def test_billing_retry_without_grace_is_inactive(
    ent_client: Client, shop: TenantHandle, apple_ca: TestAppleCA
) -> None:
    token = str(uuid.uuid4())
    tx = purchase(token, expires_in=timedelta(hours=-1))
    await notify(ent_client, shop, apple_ca, "DID_FAIL_TO_RENEW", tx)
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is False


async def test_older_and_duplicate_notifications_change_nothing(
    ent_client: Client, shop: TenantHandle, apple_ca: TestAppleCA, settings: Any
) -> None:
    token = str(uuid.uuid4())
    tx = purchase(token)
    await notify(
        ent_client, shop, apple_ca, "SUBSCRIBED", tx, signed_date=now_ms(-timedelta(hours=2))
    )
    uid = str(uuid.uuid4())
    await notify(
        ent_client,
        shop,
        apple_ca,
        "EXPIRED",
        dict(tx, expiresDate=now_ms(-timedelta(minutes=1))),
        uuid_=uid,
    )
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is False
    # an older SUBSCRIBED arrives late: ignored
    await notify(
        ent_client, shop, apple_ca, "SUBSCRIBED", tx, signed_date=now_ms(-timedelta(hours=1))
    )
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is False
    before = await sql(settings, "SELECT state, event_at FROM entitlement_sources")
    duplicate = await notify(
        ent_client,
        shop,
        apple_ca,
        "EXPIRED",
        dict(tx, expiresDate=now_ms(-timedelta(minutes=1))),
        uuid_=uid,
    )
    assert duplicate["status"] == "duplicate"
    assert await sql(settings, "SELECT state, event_at FROM entitlement_sources") == before


async def test_two_tenants_never_see_each_other(
    ent_client: Client, shop: TenantHandle, apple_ca: TestAppleCA, make_tenant: Any
) -> None:
    other = await make_tenant("app-b", bundle_id=BUNDLE_ID, app_apple_id=1234567890)
    await ent_client.put(
        "/api/v1/admin/entitlements",
        headers=other.sk,
        json={"entitlements": {"pro": {"products": [MONTHLY]}}},
    )
    token = str(uuid.uuid4())
    assert (await send_tx(ent_client, shop, apple_ca, purchase(token))).status_code == 200
    assert (await check(ent_client, other, token))["pro"]["is_active"] is False
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is True


async def test_concurrent_events_for_one_purchase_make_one_source(
    ent_client: Client, shop: TenantHandle, apple_ca: TestAppleCA, settings: Any
) -> None:
    import asyncio

    token = str(uuid.uuid4())
    tx = purchase(token)
    answers = await asyncio.gather(
        *(send_tx(ent_client, shop, apple_ca, tx) for _ in range(4)),
        notify(ent_client, shop, apple_ca, "SUBSCRIBED", tx),
    )
    assert all(a.status_code == 200 for a in answers[:4]), [a.text for a in answers[:4]]
    assert await sql(settings, "SELECT count(*) FROM entitlement_sources") == [(1,)]
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is True
