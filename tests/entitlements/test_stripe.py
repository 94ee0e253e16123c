"""Stripe web purchases become the same entitlement: Checkout on the Stripe peer, signed
webhooks, refunds, and both stores side by side (both databases)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import stripe

from tests.conftest import Client, TenantHandle
from tests.entitlements.conftest import (
    BUNDLE_ID,
    MONTHLY,
    ORIGIN,
    PRICE,
    STRIPE_WEBHOOK_SECRET,
    check,
    deliver,
)
from tests.peers.apple_ca import TestAppleCA, transaction
from tests.peers.stripe import StripePeer, signed_event


async def checkout(client: Client, shop: TenantHandle, token: str, **kw: Any) -> Any:
    body = {
        "app_account_token": token,
        "price_id": PRICE,
        "success_url": f"{ORIGIN}/thanks",
        "cancel_url": f"{ORIGIN}/pricing",
        **kw,
    }
    return await client.post("/api/v1/entitlements/stripe/checkout", headers=shop.pk, json=body)


def session_id_of(peer: StripePeer) -> str:
    return list(peer.sessions)[-1]


async def test_checkout_then_webhook_entitles_the_subject(
    ent_client: Client, shop: TenantHandle, stripe_peer: StripePeer
) -> None:
    token = str(uuid.uuid4())
    created = await checkout(ent_client, shop, token)
    assert created.status_code == 200, created.text
    assert created.json()["url"].startswith("https://checkout.stripe.com/")
    session_id = session_id_of(stripe_peer)
    sent = stripe_peer.sessions[session_id].params
    assert sent["client_reference_id"] == token
    assert sent["subscription_data"]["metadata"]["app_account_token"] == token
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is False

    event = stripe_peer.complete_checkout(session_id)
    answer = await deliver(ent_client, shop, event)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "processed", "event_type": "checkout.session.completed"}
    pro = (await check(ent_client, shop, token))["pro"]
    assert pro["is_active"] is True and pro["store"] == "stripe" and pro["product_id"] == PRICE
    assert pro["will_renew"] is True

    again = await deliver(ent_client, shop, event)
    assert again.json()["status"] == "duplicate"


async def test_cancel_at_period_end_past_due_deleted_and_refund(
    ent_client: Client, shop: TenantHandle, stripe_peer: StripePeer
) -> None:
    token = str(uuid.uuid4())
    await checkout(ent_client, shop, token)
    session_id = session_id_of(stripe_peer)
    await deliver(ent_client, shop, stripe_peer.complete_checkout(session_id))
    sub_id = stripe_peer.sessions[session_id].obj["subscription"]

    await deliver(
        ent_client, shop, stripe_peer.subscription_event(sub_id, cancel_at_period_end=True)
    )
    pro = (await check(ent_client, shop, token))["pro"]
    assert pro["is_active"] is True and pro["will_renew"] is False

    await deliver(
        ent_client, shop, stripe_peer.subscription_event(sub_id, cancel_at_period_end=False)
    )
    assert (await check(ent_client, shop, token))["pro"]["will_renew"] is True

    paid = stripe_peer.invoice_paid(sub_id, amount=999, currency="eur")
    assert (await deliver(ent_client, shop, paid)).json()["status"] == "processed"

    await deliver(ent_client, shop, stripe_peer.invoice_payment_failed(sub_id))
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is True  # grace

    intent = None
    for entry in paid["data"]["object"].get("payments", {}).get("data", []):
        intent = entry["payment"]["payment_intent"]
    assert intent is not None
    refund = stripe_peer.refund(intent)
    assert (await deliver(ent_client, shop, refund)).json()["status"] == "processed"
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is False


async def test_stripe_deleted_while_app_store_active_stays_entitled(
    ent_client: Client, shop: TenantHandle, stripe_peer: StripePeer, apple_ca: TestAppleCA
) -> None:
    token = str(uuid.uuid4())
    await checkout(ent_client, shop, token)
    session_id = session_id_of(stripe_peer)
    await deliver(ent_client, shop, stripe_peer.complete_checkout(session_id))
    tx = transaction(BUNDLE_ID, product_id=MONTHLY)
    tx["appAccountToken"] = token
    recorded = await ent_client.post(
        "/api/v1/entitlements/transactions",
        headers=shop.pk,
        json={"signed_transaction": apple_ca.sign(tx)},
    )
    assert recorded.status_code == 200
    sub_id = stripe_peer.sessions[session_id].obj["subscription"]
    await deliver(ent_client, shop, stripe_peer.delete_subscription(sub_id))
    pro = (await check(ent_client, shop, token))["pro"]
    assert pro["is_active"] is True and pro["store"] == "app_store"


async def test_bad_signature_and_unknown_app_answer_the_same(
    ent_client: Client, shop: TenantHandle, stripe_peer: StripePeer
) -> None:
    token = str(uuid.uuid4())
    await checkout(ent_client, shop, token)
    event = stripe_peer.complete_checkout(session_id_of(stripe_peer))
    body, headers = signed_event(event, "whsec_wrong_secret")
    bad = await ent_client.post(
        f"/api/v1/entitlements/stripe/webhook/{shop.app_id}", content=body, headers=headers
    )
    body, headers = signed_event(event, STRIPE_WEBHOOK_SECRET)
    unknown = await ent_client.post(
        "/api/v1/entitlements/stripe/webhook/no-such-app", content=body, headers=headers
    )
    old = await deliver(ent_client, shop, event, timestamp=int(time.time()) - 600)
    for answer in (bad, unknown, old):
        assert answer.status_code == 400
        assert answer.json()["code"] == "invalid_webhook_signature"
    assert bad.json()["detail"] == unknown.json()["detail"]
    # the library agrees with our verdicts
    stripe.WebhookSignature.verify_header(
        body.decode(), headers["Stripe-Signature"], STRIPE_WEBHOOK_SECRET, 300
    )
    assert (await check(ent_client, shop, token))["pro"]["is_active"] is False


async def test_off_origin_return_url_and_unmapped_price(
    ent_client: Client, shop: TenantHandle, stripe_peer: StripePeer
) -> None:
    token = str(uuid.uuid4())
    off = await checkout(ent_client, shop, token, success_url="https://evil.example.net/x")
    assert off.status_code == 422 and off.json()["code"] == "return_url_not_allowed"
    unmapped = await checkout(ent_client, shop, token, price_id="price_other")
    assert unmapped.status_code == 422 and unmapped.json()["code"] == "price_not_mapped"
    bad_token = await checkout(ent_client, shop, "not-a-uuid")
    assert bad_token.status_code == 422
    assert not stripe_peer.sessions


async def test_one_time_payment_grants_lifetime(
    ent_client: Client, shop: TenantHandle, stripe_peer: StripePeer
) -> None:
    token = str(uuid.uuid4())
    created = await checkout(ent_client, shop, token, price_id="price_lifetime", mode="payment")
    assert created.status_code == 200, created.text
    event = stripe_peer.complete_checkout(session_id_of(stripe_peer))
    assert (await deliver(ent_client, shop, event)).json()["status"] == "processed"
    life = (await check(ent_client, shop, token))["lifetime"]
    assert life["is_active"] is True and life["expires_at"] is None
