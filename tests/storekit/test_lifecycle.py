"""Entitlements and notification receipts expire like all data: invisible at once, then deleted."""

from __future__ import annotations

from pathlib import Path

from stateless.config import Settings
from tests.conftest import ClientFactory, TenantHandle
from tests.peers.apple_ca import notification, transaction
from tests.storekit.conftest import APP_APPLE_ID, BUNDLE_ID, TestPKI, count_rows
from tests.support import count_rows as count_where
from tests.support import expire_rows

VALIDATE = "/api/v1/ios/validate-receipt"


async def _expire(settings: Settings) -> None:
    for table in ("storekit_entitlements", "storekit_notification_receipts"):
        await expire_rows(settings, table)


async def _expiring_within(settings: Settings, table: str, low: int, high: int) -> int:
    """Rows whose expiry lies between `low` and `high` seconds from now."""
    if settings.is_sqlite:
        bound = "datetime('now', '+{} seconds')"
    else:
        bound = "now() + interval '{} seconds'"
    where = f"expires_at > {bound.format(low)} AND expires_at <= {bound.format(high)}"
    return await count_where(settings, table, where)


NOTIFY = "/api/v1/ios/notifications/app-a"


async def test_expired_state_is_invisible_and_cleaned(
    make_client: ClientFactory,
    roots_dir: Path,
    app: TenantHandle,
    pki: TestPKI,
    settings: Settings,
) -> None:
    client = await make_client(
        apple_root_certs_dir=roots_dir,
        # A lifetime of its own (checked below), then expiry as the passage of time would
        # make it: waiting on a short clock instead fails on a loaded machine.
        ttl_overrides={
            "entitlements": {"default": 120, "max": 120},
            "notification_receipts": {"default": 120, "max": 120},
        },
    )
    tx = transaction(BUNDLE_ID, kind="Non-Consumable", expires_in=None)
    token = pki.trusted.sign(tx)
    refund = pki.trusted.sign(
        notification(BUNDLE_ID, "REFUND", signed_transaction=token, app_apple_id=APP_APPLE_ID)
    )
    assert (await client.post(NOTIFY, json={"signedPayload": refund})).json()["status"] == (
        "processed"
    )
    assert (await client.post(VALIDATE, json={"signed_transaction": token}, headers=app.pk)).json()[
        "status"
    ] == "revoked"
    for table in ("storekit_entitlements", "storekit_notification_receipts"):
        assert await _expiring_within(settings, table, 60, 121) == await count_rows(settings, table)

    await _expire(settings)
    # expired rows are not acted on, even before cleanup ran
    assert await count_rows(settings, "storekit_entitlements") == 1
    assert (await client.post(VALIDATE, json={"signed_transaction": token}, headers=app.pk)).json()[
        "status"
    ] == "valid"
    # a replay after the receipt expired is processed again (the stale row makes way)
    assert (await client.post(NOTIFY, json={"signedPayload": refund})).json()["status"] == (
        "processed"
    )
    assert (await client.post(VALIDATE, json={"signed_transaction": token}, headers=app.pk)).json()[
        "status"
    ] == "revoked"

    await _expire(settings)
    response = await client.post("/api/v1/admin/cleanup", headers=app.sk)
    assert response.status_code == 200, response.text
    assert await count_rows(settings, "storekit_entitlements") == 0
    assert await count_rows(settings, "storekit_notification_receipts") == 0


async def test_erase_data_removes_entitlements(
    make_client: ClientFactory,
    roots_dir: Path,
    app: TenantHandle,
    pki: TestPKI,
    settings: Settings,
) -> None:
    client = await make_client(apple_root_certs_dir=roots_dir)
    tx = transaction(BUNDLE_ID)
    refund = pki.trusted.sign(
        notification(
            BUNDLE_ID, "REFUND", signed_transaction=pki.trusted.sign(tx), app_apple_id=APP_APPLE_ID
        )
    )
    assert (await client.post(NOTIFY, json={"signedPayload": refund})).status_code == 200
    response = await client.delete("/api/v1/admin/data", headers=app.sk)
    assert response.status_code == 200, response.text
    assert await count_rows(settings, "storekit_entitlements") == 0
    assert await count_rows(settings, "storekit_notification_receipts") == 0
    inventory = (await client.get("/api/v1/admin/data-inventory", headers=app.sk)).json()
    kinds = {item["kind"] for item in inventory["kinds"]}
    assert {"entitlements", "notification_receipts"} <= kinds
