"""The entitlements feature's local peers speak the real protocols: the official `stripe` library
and Apple's app-store-server-library talk to them unchanged, and verify what they sign."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
import stripe
from appstoreserverlibrary.api_client import APIError, APIException, AsyncAppStoreServerAPIClient
from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.models.NotificationHistoryRequest import NotificationHistoryRequest
from appstoreserverlibrary.models.NotificationTypeV2 import NotificationTypeV2
from appstoreserverlibrary.models.Status import Status
from appstoreserverlibrary.signed_data_verifier import SignedDataVerifier
from cryptography.hazmat.primitives import serialization

from tests.peers.apple_ca import TestAppleCA, notification, now_ms, renewal_info, transaction
from tests.peers.appstore_api import AppStoreApiPeer, make_api_key, running_appstore_api
from tests.peers.stripe import (
    StripePeer,
    compute_signature,
    parse_form,
    running_stripe,
    signed_event,
)

BUNDLE_ID = "com.example.app"
ISSUER_ID = "57246542-96fe-1a63-e053-0824d011072a"
KEY_ID = "2X9R4HXF34"
APP_APPLE_ID = 1234567890
SECRET_KEY = "sk_test_peer_" + "x" * 24
WEBHOOK_SECRET = "whsec_" + "y" * 32
PRICE = "price_pro_monthly"


# -- Stripe: webhook signatures -------------------------------------------------------------------


def _event() -> dict[str, Any]:
    return {
        "id": "evt_1",
        "object": "event",
        "type": "invoice.paid",
        "created": int(time.time()),
        "livemode": False,
        "api_version": "2025-09-30.clover",
        "data": {"object": {"id": "in_1", "object": "invoice", "amount_paid": 999}},
    }


def test_the_stripe_library_accepts_what_signed_event_produces() -> None:
    body, headers = signed_event(_event(), WEBHOOK_SECRET)
    assert headers["Content-Type"] == "application/json"
    assert stripe.WebhookSignature.verify_header(
        body, headers["Stripe-Signature"], WEBHOOK_SECRET, tolerance=300
    )
    event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], WEBHOOK_SECRET)
    assert event.type == "invoice.paid"
    assert event.data.object.amount_paid == 999


def test_the_matching_signature_need_not_be_the_first() -> None:
    ts = int(time.time())
    old = compute_signature("whsec_rolled_away", ts, b"whatever")
    body, headers = signed_event(
        _event(), WEBHOOK_SECRET, timestamp=ts, extra_signatures=[old, "0" * 64]
    )
    header = headers["Stripe-Signature"]
    assert header.startswith(f"t={ts},v1={old},v1={'0' * 64},v1=")
    assert stripe.WebhookSignature.verify_header(body, header, WEBHOOK_SECRET, tolerance=300)


def test_the_stripe_library_refuses_tampered_bodies_wrong_secrets_and_old_timestamps() -> None:
    body, headers = signed_event(_event(), WEBHOOK_SECRET)
    header = headers["Stripe-Signature"]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            body.replace(b"999", b"998"), header, WEBHOOK_SECRET, tolerance=300
        )
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body, header, "whsec_other", tolerance=300)
    old_body, old_headers = signed_event(_event(), WEBHOOK_SECRET, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.WebhookSignature.verify_header(
            old_body, old_headers["Stripe-Signature"], WEBHOOK_SECRET, tolerance=300
        )


def test_the_form_parser_reads_stripes_bracketed_keys() -> None:
    encoded = (
        "mode=subscription&line_items[0][price]=p&line_items[0][quantity]=1"
        "&line_items[1][price]=q&metadata[app_account_token]=t&expand[]=a&expand[]=b"
        "&subscription_data[metadata][k]=v&allow_promotion_codes=true"
    )
    assert parse_form(encoded) == {
        "mode": "subscription",
        "line_items": [{"price": "p", "quantity": "1"}, {"price": "q"}],
        "metadata": {"app_account_token": "t"},
        "expand": ["a", "b"],
        "subscription_data": {"metadata": {"k": "v"}},
        "allow_promotion_codes": "true",
    }


# -- Stripe: the API, through the official library ------------------------------------------------


@pytest.fixture
def stripe_peer() -> Iterator[StripePeer]:
    with running_stripe(SECRET_KEY) as peer:
        peer.add_price(PRICE, product_id="prod_pro", unit_amount=999)
        peer.add_price("price_lifetime", product_id="prod_life", unit_amount=4999, recurring=False)
        yield peer


def _client(peer: StripePeer, key: str = SECRET_KEY) -> stripe.StripeClient:
    return stripe.StripeClient(
        key, base_addresses={"api": peer.url}, http_client=stripe.HTTPXClient()
    )


def _session_params(token: str, mode: str = "subscription", price: str = PRICE) -> Any:
    params: dict[str, Any] = {
        "mode": mode,
        "line_items": [{"price": price, "quantity": 1}],
        "success_url": "https://app.example.com/done?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.example.com/cancelled",
        "client_reference_id": token,
        "metadata": {"app_account_token": token},
    }
    if mode == "subscription":
        params["subscription_data"] = {"metadata": {"app_account_token": token}}
    return params


async def test_the_stripe_library_creates_a_session_and_reads_the_subscription(
    stripe_peer: StripePeer,
) -> None:
    client = _client(stripe_peer)
    token = str(uuid.uuid4())
    session = await client.v1.checkout.sessions.create_async(_session_params(token))
    assert session.id.startswith("cs_test_")
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert session.status == "open" and session.subscription is None
    assert session.expires_at - time.time() == pytest.approx(86400, abs=5)

    sent = stripe_peer.requests[-1]
    assert sent.method == "POST" and sent.path == "/v1/checkout/sessions"
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "idempotency-key" in sent.headers
    assert "line_items[0][price]=price_pro_monthly" in sent.encoded
    assert f"subscription_data[metadata][app_account_token]={token}" in sent.encoded
    assert stripe_peer.sessions[session.id].params["line_items"] == [
        {"price": PRICE, "quantity": "1"}
    ]
    assert stripe_peer.sessions[session.id].params["subscription_data"] == {
        "metadata": {"app_account_token": token}
    }

    event = stripe_peer.complete_checkout(session.id, period_days=30)
    assert event["type"] == "checkout.session.completed"
    completed = event["data"]["object"]
    assert completed["status"] == "complete" and completed["customer"].startswith("cus_")
    sub_id = completed["subscription"]
    assert sub_id.startswith("sub_")

    sub = await client.v1.subscriptions.retrieve_async(sub_id)
    assert sub.status == "active"
    assert sub.metadata["app_account_token"] == token
    item = sub["items"].data[0]
    assert sub.items.data[0].current_period_end == item.current_period_end
    assert item.current_period_end - item.current_period_start == 30 * 86400
    assert item.price.id == PRICE and item.price.product == "prod_pro"
    assert isinstance(sub.latest_invoice, str) and sub.latest_invoice.startswith("in_")

    fetched = await client.v1.checkout.sessions.retrieve_async(
        session.id, {"expand": ["subscription"]}
    )
    assert isinstance(fetched.subscription, stripe.Subscription)
    assert fetched.subscription.id == sub_id
    assert stripe_peer.requests[-1].params == {"expand": ["subscription"]}


async def test_the_stripe_library_sees_stripes_errors(stripe_peer: StripePeer) -> None:
    with pytest.raises(stripe.AuthenticationError):
        await _client(stripe_peer, "sk_test_wrong").v1.subscriptions.retrieve_async("sub_1")
    assert stripe_peer.requests[-1].status == 401

    client = _client(stripe_peer)
    with pytest.raises(stripe.InvalidRequestError) as missing_price:
        await client.v1.checkout.sessions.create_async(_session_params("t", price="price_nope"))
    assert missing_price.value.code == "resource_missing"
    assert missing_price.value.param == "line_items[0][price]"
    with pytest.raises(stripe.InvalidRequestError) as wrong_mode:
        await client.v1.checkout.sessions.create_async(_session_params("t", mode="payment"))
    assert wrong_mode.value.param == "line_items[0][price]"
    assert "recurring price" in str(wrong_mode.value)
    with pytest.raises(stripe.InvalidRequestError) as no_sub:
        await client.v1.subscriptions.retrieve_async("sub_nope")
    assert no_sub.value.http_status == 404 and no_sub.value.code == "resource_missing"

    stripe_peer.fail_next(429)
    with pytest.raises(stripe.RateLimitError):
        await client.v1.subscriptions.retrieve_async("sub_nope")
    stripe_peer.fail_next(500)
    with pytest.raises(stripe.APIError):
        await client.v1.subscriptions.retrieve_async("sub_nope")
    assert [r.status for r in stripe_peer.requests[-2:]] == [429, 500]


async def test_a_subscriptions_life_renews_fails_recovers_and_ends(
    stripe_peer: StripePeer,
) -> None:
    client = _client(stripe_peer)
    session = await client.v1.checkout.sessions.create_async(_session_params("tok"))
    sub_id = stripe_peer.complete_checkout(session.id)["data"]["object"]["subscription"]
    first_end = stripe_peer.subscriptions[sub_id]["items"]["data"][0]["current_period_end"]

    paid = stripe_peer.invoice_paid(sub_id)
    invoice = paid["data"]["object"]
    assert paid["type"] == "invoice.paid" and invoice["status"] == "paid"
    assert invoice["parent"]["subscription_details"] == {
        "subscription": sub_id,
        "metadata": {"app_account_token": "tok"},
    }
    pi = invoice["payments"]["data"][0]["payment"]["payment_intent"]
    assert pi.startswith("pi_")
    assert invoice["lines"]["data"][0]["period"]["start"] == first_end
    sub = await client.v1.subscriptions.retrieve_async(sub_id)
    assert sub.items.data[0].current_period_end == first_end + 30 * 86400

    failed = stripe_peer.invoice_payment_failed(sub_id)
    assert failed["type"] == "invoice.payment_failed"
    assert stripe_peer.subscriptions[sub_id]["status"] == "past_due"
    recovered = stripe_peer.invoice_paid(sub_id)
    assert recovered["data"]["object"]["id"] == failed["data"]["object"]["id"]
    sub = await client.v1.subscriptions.retrieve_async(sub_id)
    assert sub.status == "active"
    assert sub.items.data[0].current_period_end == first_end + 60 * 86400

    cancelling = stripe_peer.subscription_event(sub_id, cancel_at_period_end=True)
    assert cancelling["type"] == "customer.subscription.updated"
    assert cancelling["data"]["previous_attributes"]["cancel_at_period_end"] is False
    assert cancelling["data"]["object"]["cancel_at"] == first_end + 60 * 86400
    deleted = stripe_peer.delete_subscription(sub_id)
    assert deleted["type"] == "customer.subscription.deleted"
    assert deleted["data"]["object"]["status"] == "canceled"

    refunded = stripe_peer.refund(pi, amount=500)
    charge = refunded["data"]["object"]
    assert (charge["amount"], charge["amount_refunded"], charge["refunded"]) == (999, 500, False)
    charge = stripe_peer.refund(pi)["data"]["object"]
    assert charge["refunded"] is True and charge["payment_intent"] == pi

    created = [event["created"] for event in stripe_peer.events]
    assert created == sorted(created)
    for event in stripe_peer.events:
        body, headers = signed_event(event, WEBHOOK_SECRET)
        parsed = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], WEBHOOK_SECRET)
        assert parsed.id == event["id"]


async def test_a_one_time_purchase_gets_a_payment_intent(stripe_peer: StripePeer) -> None:
    client = _client(stripe_peer)
    params = _session_params("tok", mode="payment", price="price_lifetime")
    session = await client.v1.checkout.sessions.create_async(params)
    completed = stripe_peer.complete_checkout(session.id)["data"]["object"]
    assert completed["payment_intent"].startswith("pi_") and completed["subscription"] is None
    assert completed["amount_total"] == 4999 and completed["payment_status"] == "paid"
    refunded = stripe_peer.refund(completed["payment_intent"])["data"]["object"]
    assert refunded["amount_refunded"] == 4999 and refunded["refunded"] is True


# -- App Store Server API, through Apple's library ------------------------------------------------


class PeerClient(AsyncAppStoreServerAPIClient):
    """Apple's async client pointed at the peer."""

    def __init__(self, base_url: str, signing_key: bytes, key_id: str, issuer_id: str) -> None:
        super().__init__(signing_key, key_id, issuer_id, BUNDLE_ID, Environment.SANDBOX)
        self.peer_url = base_url

    def _get_full_url(self, path: str) -> str:
        return self.peer_url + path


@pytest.fixture(scope="module")
def ca() -> TestAppleCA:
    return TestAppleCA()


@pytest.fixture(scope="module")
def api_key() -> tuple[bytes, bytes]:
    return make_api_key()


@pytest.fixture
def appstore(ca: TestAppleCA, api_key: tuple[bytes, bytes]) -> Iterator[AppStoreApiPeer]:
    with running_appstore_api(
        ca,
        bundle_id=BUNDLE_ID,
        issuer_id=ISSUER_ID,
        key_id=KEY_ID,
        public_key_pem=api_key[1],
        app_apple_id=APP_APPLE_ID,
        history_page_size=20,
    ) as peer:
        yield peer


@pytest.fixture
async def apple_client(
    appstore: AppStoreApiPeer, api_key: tuple[bytes, bytes]
) -> AsyncIterator[PeerClient]:
    client = PeerClient(appstore.url, api_key[0], KEY_ID, ISSUER_ID)
    yield client
    await client.async_close()  # type: ignore[no-untyped-call]


def _verifier(ca: TestAppleCA) -> SignedDataVerifier:
    root = ca.root.public_bytes(serialization.Encoding.DER)
    return SignedDataVerifier([root], False, Environment.SANDBOX, BUNDLE_ID, APP_APPLE_ID)


def test_the_api_key_looks_like_a_p8_file(api_key: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = api_key
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")


async def test_apples_client_reads_subscription_statuses(
    appstore: AppStoreApiPeer, apple_client: PeerClient, ca: TestAppleCA
) -> None:
    tx = transaction(BUNDLE_ID, transaction_id="2000000111", original_transaction_id="2000000100")
    renewal = renewal_info("2000000100")
    appstore.set_subscription(
        "2000000100",
        status=1,
        signed_transaction=ca.sign(tx),
        signed_renewal=ca.sign(renewal),
        also_known_as=["2000000111"],
    )
    for any_id in ("2000000100", "2000000111"):
        response = await apple_client.get_all_subscription_statuses(any_id)
        assert response.environment == Environment.SANDBOX
        assert (response.bundleId, response.appAppleId) == (BUNDLE_ID, APP_APPLE_ID)
        assert response.data is not None
        group = response.data[0]
        assert group.subscriptionGroupIdentifier == "21000000"
        assert group.lastTransactions is not None
        last = group.lastTransactions[0]
        assert last.status == Status.ACTIVE and last.originalTransactionId == "2000000100"
        assert last.signedTransactionInfo and last.signedRenewalInfo
        decoded = _verifier(ca).verify_and_decode_signed_transaction(last.signedTransactionInfo)
        assert decoded.transactionId == "2000000111" and decoded.expiresDate == tx["expiresDate"]
        info = _verifier(ca).verify_and_decode_renewal_info(last.signedRenewalInfo)
        assert info.originalTransactionId == "2000000100"

    request = appstore.requests[-1]
    assert (request.method, request.path, request.status) == (
        "GET",
        "/inApps/v1/subscriptions/2000000111",
        200,
    )
    assert request.claims is not None and request.claims["bid"] == BUNDLE_ID

    filtered = await apple_client.get_all_subscription_statuses("2000000100", [Status.EXPIRED])
    assert filtered.data == []
    assert appstore.requests[-1].query == {"status": ["2"]}

    with pytest.raises(APIException) as unknown:
        await apple_client.get_all_subscription_statuses("2000000999")
    assert unknown.value.http_status_code == 404
    assert unknown.value.api_error == APIError.TRANSACTION_ID_NOT_FOUND


async def test_script_subscription_signs_with_the_peers_ca(
    appstore: AppStoreApiPeer, apple_client: PeerClient, ca: TestAppleCA
) -> None:
    tx, _ = appstore.script_subscription(
        "2000000200", status=4, transaction_id="2000000201", grace_for=timedelta(days=3)
    )
    response = await apple_client.get_all_subscription_statuses("2000000201")
    assert response.data is not None and response.data[0].lastTransactions is not None
    last = response.data[0].lastTransactions[0]
    assert last.status == Status.BILLING_GRACE_PERIOD
    assert last.signedTransactionInfo is not None and last.signedRenewalInfo is not None
    decoded = _verifier(ca).verify_and_decode_signed_transaction(last.signedTransactionInfo)
    assert decoded.transactionId == tx["transactionId"]
    renewal = _verifier(ca).verify_and_decode_renewal_info(last.signedRenewalInfo)
    assert renewal.gracePeriodExpiresDate is not None


async def test_apples_client_pages_through_the_notification_history(
    appstore: AppStoreApiPeer, apple_client: PeerClient, ca: TestAppleCA
) -> None:
    base = now_ms(-timedelta(days=2))
    signed: list[str] = []
    for i in range(47):
        payload = notification(
            BUNDLE_ID, "DID_RENEW", app_apple_id=APP_APPLE_ID, notification_uuid=f"n-{i}"
        )
        payload["signedDate"] = base + i * 60_000
        signed.append(ca.sign(payload))
    for i in reversed(range(47)):  # added out of order: answered oldest first
        appstore.add_history(signed[i], base + i * 60_000)
    start, end = base + 2 * 60_000, base + 44 * 60_000  # items 2..44 inclusive: 43 of them

    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        request = NotificationHistoryRequest(startDate=start, endDate=end)
        response = await apple_client.get_notification_history(token, request)
        pages += 1
        assert response.notificationHistory is not None
        seen += [item.signedPayload or "" for item in response.notificationHistory]
        if not response.hasMore:
            break
        token = response.paginationToken
        assert token
    assert pages == 3
    assert seen == signed[2:45]
    assert [r.query.get("paginationToken") is None for r in appstore.requests] == [
        True,
        False,
        False,
    ]
    assert appstore.requests[0].json == {"startDate": start, "endDate": end}
    decoded = _verifier(ca).verify_and_decode_notification(seen[0])
    assert decoded.notificationType == NotificationTypeV2.DID_RENEW
    assert decoded.notificationUUID == "n-2"

    appstore.add_notification("EXPIRED", subtype="VOLUNTARY", signed_date_ms=base + 50 * 60_000)
    only_expired = NotificationHistoryRequest(
        startDate=start, endDate=now_ms(), notificationType=NotificationTypeV2.EXPIRED
    )
    response = await apple_client.get_notification_history(None, only_expired)
    assert response.notificationHistory is not None
    assert len(response.notificationHistory) == 1 and response.hasMore is False
    expired = response.notificationHistory[0].signedPayload
    assert expired is not None
    assert _verifier(ca).verify_and_decode_notification(expired).rawSubtype == "VOLUNTARY"

    with pytest.raises(APIException) as missing_start:
        await apple_client.get_notification_history(None, NotificationHistoryRequest(endDate=end))
    assert missing_start.value.http_status_code == 400
    assert missing_start.value.api_error == APIError.INVALID_START_DATE


@pytest.mark.parametrize(
    ("key_id", "issuer_id"),
    [("WRONGKEY01", ISSUER_ID), (KEY_ID, "00000000-0000-0000-0000-000000000000")],
)
async def test_the_peer_refuses_tokens_apple_would_refuse(
    appstore: AppStoreApiPeer, api_key: tuple[bytes, bytes], key_id: str, issuer_id: str
) -> None:
    client = PeerClient(appstore.url, api_key[0], key_id, issuer_id)
    try:
        with pytest.raises(APIException) as refused:
            await client.get_all_subscription_statuses("2000000100")
    finally:
        await client.async_close()  # type: ignore[no-untyped-call]
    assert refused.value.http_status_code == 401
    assert appstore.requests[-1].claims is None and appstore.requests[-1].status == 401


async def test_the_peer_checks_bundle_audience_and_expiry(
    appstore: AppStoreApiPeer, api_key: tuple[bytes, bytes]
) -> None:
    def token(**overrides: Any) -> str:
        claims = {
            "iss": ISSUER_ID,
            "aud": "appstoreconnect-v1",
            "bid": BUNDLE_ID,
            "exp": int(time.time()) + 300,
            **overrides,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, api_key[0], algorithm="ES256", headers={"kid": KEY_ID})

    url = appstore.url + "/inApps/v1/subscriptions/2000000100"
    async with httpx.AsyncClient() as http:
        ok = await http.get(url, headers={"Authorization": f"Bearer {token()}"})
        assert ok.status_code == 404  # authenticated; nothing scripted
        for bad in (
            token(bid="com.example.other"),
            token(aud="appstoreconnect-v2"),
            token(exp=int(time.time()) - 10),
            token(exp=int(time.time()) + 7200),
            token(exp=None),
        ):
            refused = await http.get(url, headers={"Authorization": f"Bearer {bad}"})
            assert (refused.status_code, refused.content) == (401, b"")
        refused = await http.get(url)
        assert refused.status_code == 401


async def test_fail_next_surfaces_as_apples_errors(
    appstore: AppStoreApiPeer, apple_client: PeerClient
) -> None:
    appstore.script_subscription("2000000300")
    appstore.fail_next(429, retry_after=7)
    with pytest.raises(APIException) as limited:
        await apple_client.get_all_subscription_statuses("2000000300")
    assert limited.value.http_status_code == 429
    assert limited.value.api_error == APIError.RATE_LIMIT_EXCEEDED
    appstore.fail_next(503, count=2)
    for _ in range(2):
        with pytest.raises(APIException) as unavailable:
            await apple_client.get_all_subscription_statuses("2000000300")
        assert unavailable.value.http_status_code == 503
    response = await apple_client.get_all_subscription_statuses("2000000300")
    assert response.data
    assert [r.status for r in appstore.requests] == [429, 503, 503, 200]

    appstore.fail_next(429, retry_after=7)
    async with httpx.AsyncClient() as http:
        url = appstore.url + "/inApps/v1/subscriptions/2000000300"
        unauthenticated = await http.get(url)
        assert unauthenticated.status_code == 401  # does not use up the fault
        token = apple_client._generate_token()
        limited_raw = await http.get(url, headers={"Authorization": f"Bearer {token}"})
    assert limited_raw.status_code == 429 and limited_raw.headers["Retry-After"] == "7"
    assert limited_raw.headers["Content-Type"] == "application/json"
    assert limited_raw.json() == {"errorCode": 4290000, "errorMessage": "Rate limit exceeded."}
