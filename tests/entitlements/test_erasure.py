"""A subject's entitlement sources go with `POST /subjects/erase` by app_account_token; other
subjects' sources stay (both databases)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import Client, TenantHandle
from tests.entitlements.conftest import BUNDLE_ID, MONTHLY, check
from tests.peers.apple_ca import TestAppleCA, transaction
from tests.support import count_rows


async def _buy(client: Client, shop: TenantHandle, ca: TestAppleCA, token: str) -> str:
    tx = transaction(BUNDLE_ID, product_id=MONTHLY)
    tx["appAccountToken"] = token
    answer = await client.post(
        "/api/v1/entitlements/transactions",
        headers=shop.pk,
        json={"signed_transaction": ca.sign(tx)},
    )
    assert answer.status_code == 200, answer.text
    return str(tx["originalTransactionId"])


async def test_erase_subject_removes_its_sources(
    ent_client: Client, shop: TenantHandle, apple_ca: TestAppleCA, settings: Any
) -> None:
    leaving, staying = str(uuid.uuid4()), str(uuid.uuid4())
    await _buy(ent_client, shop, apple_ca, leaving)
    await _buy(ent_client, shop, apple_ca, staying)
    assert await count_rows(settings, "entitlement_sources") == 2
    erased = await ent_client.post(
        "/api/v1/subjects/erase", headers=shop.pk, json={"app_account_token": leaving.upper()}
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["erased"]["entitlement_sources"] == 1
    assert await count_rows(settings, "entitlement_sources") == 1
    assert (await check(ent_client, shop, leaving))["pro"]["is_active"] is False
    assert (await check(ent_client, shop, staying))["pro"]["is_active"] is True
    again = await ent_client.post(
        "/api/v1/subjects/erase", headers=shop.pk, json={"app_account_token": leaving}
    )
    assert again.json()["erased"]["entitlement_sources"] == 0
