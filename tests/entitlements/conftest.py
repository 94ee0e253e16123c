"""Entitlement fixtures: a test signing CA trusted through APPLE_ROOT_CERTS_DIR, the local App
Store Server API and Stripe peers, a webhook receiver, and an app configured for all of them
with the map `pro` = the monthly App Store product, the Stripe price and its product."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.peers.apple_ca import TestAppleCA
from tests.peers.appstore_api import AppStoreApiPeer, make_api_key, running_appstore_api
from tests.peers.stripe import StripePeer, running_stripe, signed_event
from tests.peers.webhook import Answer, Received, serve_http

BUNDLE_ID = "com.example.app"
APP_APPLE_ID = 1234567890
ISSUER_ID = "57246542-96fe-1a63-e053-0824d011072a"
KEY_ID = "ABCDEFGHIJ"
STRIPE_KEY = "sk_test_entitlements_0123456789"
STRIPE_WEBHOOK_SECRET = "whsec_entitlements_test_secret_0123456789"
MONTHLY = "com.example.pro.monthly"
PRICE = "price_pro_monthly"
STRIPE_PRODUCT = "prod_pro"
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="session")
def apple_ca() -> TestAppleCA:
    return TestAppleCA()


@pytest.fixture(scope="session")
def ca_roots(apple_ca: TestAppleCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("entitlement-roots")
    apple_ca.write_root(directory)
    return directory


@pytest.fixture(scope="session")
def api_key() -> tuple[bytes, bytes]:
    return make_api_key()


@pytest.fixture
def appstore(apple_ca: TestAppleCA, api_key: tuple[bytes, bytes]) -> Iterator[AppStoreApiPeer]:
    with running_appstore_api(
        apple_ca,
        bundle_id=BUNDLE_ID,
        issuer_id=ISSUER_ID,
        key_id=KEY_ID,
        public_key_pem=api_key[1],
        app_apple_id=APP_APPLE_ID,
        history_page_size=2,
    ) as peer:
        yield peer


@pytest.fixture
def stripe_peer() -> Iterator[StripePeer]:
    with running_stripe(STRIPE_KEY) as peer:
        peer.add_price(PRICE, product_id=STRIPE_PRODUCT, unit_amount=999, currency="eur")
        peer.add_price("price_lifetime", product_id="prod_life", unit_amount=4999, recurring=False)
        yield peer


@dataclass
class Receiver:
    url: str
    received: list[Received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received: list[Received] = []

    def respond(request: Received) -> Answer:
        received.append(request)
        return Answer(status=204)

    with serve_http(respond) as port:
        yield Receiver(f"http://127.0.0.1:{port}/hooks", received)


@pytest.fixture
async def ent_client(
    make_client: ClientFactory,
    ca_roots: Path,
    appstore: AppStoreApiPeer,
    stripe_peer: StripePeer,
) -> Client:
    return await make_client(
        apple_root_certs_dir=ca_roots,
        appstore_api_url=appstore.url,
        appstore_api_sandbox_url=appstore.url,
        stripe_api_url=stripe_peer.url,
        webhook_allow_private_networks=True,
    )


@pytest.fixture
async def shop(
    make_tenant: TenantFactory,
    ent_client: Client,
    api_key: tuple[bytes, bytes],
    receiver: Receiver,
) -> TenantHandle:
    handle = await make_tenant(
        "app-a",
        bundle_id=BUNDLE_ID,
        app_apple_id=APP_APPLE_ID,
        appstore_issuer_id=ISSUER_ID,
        appstore_key_id=KEY_ID,
        appstore_api_key_p8=api_key[0].decode(),
        stripe_secret_key=STRIPE_KEY,
        stripe_webhook_secret=STRIPE_WEBHOOK_SECRET,
        cors_origins=[ORIGIN],
        webhook_url=receiver.url,
    )
    answer = await ent_client.put(
        "/api/v1/admin/entitlements",
        headers=handle.sk,
        json={
            "entitlements": {
                "pro": {"products": [MONTHLY, PRICE]},
                "lifetime": {"products": ["price_lifetime"]},
            }
        },
    )
    assert answer.status_code == 200, answer.text
    return handle


async def check(client: Client, handle: TenantHandle, token: str) -> dict[str, Any]:
    answer = await client.post(
        "/api/v1/entitlements/check", headers=handle.pk, json={"app_account_token": token}
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["entitlements"])


async def deliver(client: Client, handle: TenantHandle, event: dict[str, Any], **kw: Any) -> Any:
    body, headers = signed_event(event, STRIPE_WEBHOOK_SECRET, **kw)
    return await client.post(
        f"/api/v1/entitlements/stripe/webhook/{handle.app_id}", content=body, headers=headers
    )
