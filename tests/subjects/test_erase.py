"""POST /api/v1/subjects/erase: the subject's rows go now, everywhere, and nothing else does."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest

from stateless.config import Settings
from stateless.ios.models import DeviceToken
from stateless.lifecycle.policy import TtlPolicy
from stateless.lifecycle.registry import LifecycleRegistry
from stateless.subjects.schemas import EraseSubjectIn
from stateless.webpush.models import WebPushSubscription
from tests.conftest import Client, ClientFactory, TenantFactory
from tests.privacy import dump_database
from tests.subjects.conftest import (
    ERASE,
    assert_erased,
    device_hash_of,
    make_app,
    register_device,
    subscribe,
    subscriber_hash_of,
    verify_with_jwks,
)
from tests.support import count_rows, expire_rows
from tests.test_core import assert_problem

# Distinctive ids: a dump that held one would show it unambiguously.
SUBJECT_DEVICES = ["subject-device-7f3a91", "subject-device-b20c44"]
SUBJECT_SUBSCRIBER = "subject-subscriber-5d6e07"
OTHER_DEVICE = "bystander-device-0e1f2a"
OTHER_SUBSCRIBER = "bystander-subscriber-93c8d1"


async def _rows(settings: Settings, app_id: str) -> tuple[int, int]:
    return (
        await count_rows(settings, "ios_device_tokens", "app_id = :a", a=app_id),
        await count_rows(settings, "webpush_subscriptions", "app_id = :a", a=app_id),
    )


@pytest.mark.parametrize("key", ["pk", "sk"])
async def test_erase_takes_every_row_of_the_subject_and_nothing_else(
    subjects_client: Client,
    make_tenant: TenantFactory,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    key: str,
) -> None:
    client = subjects_client
    app, other_app = await make_app(make_tenant, "app-a"), await make_app(make_tenant, "app-b")
    for tenant in (app, other_app):  # the other app knows the same ids for its own user
        for device_id in (*SUBJECT_DEVICES, OTHER_DEVICE):
            await register_device(client, tenant, device_id)
        for subscriber_id in (SUBJECT_SUBSCRIBER, OTHER_SUBSCRIBER):
            await subscribe(client, tenant, subscriber_id)
    # One of the subject's tokens has expired but not been cleaned up: it goes too.
    await expire_rows(
        settings,
        "ios_device_tokens",
        "app_id = :a AND device_hash = :h",
        a=app.app_id,
        h=device_hash_of(settings, app.app_id, SUBJECT_DEVICES[1]),
    )

    r = await client.post(
        ERASE,
        headers=app.headers(key),
        json={"device_ids": SUBJECT_DEVICES, "subscriber_ids": [SUBJECT_SUBSCRIBER]},
    )

    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"erased", "receipt"}
    assert_erased(body["erased"], {"device_tokens": 2, "webpush_subscriptions": 1})
    assert await _rows(settings, app.app_id) == (1, 1)
    assert await _rows(settings, other_app.app_id) == (3, 2)
    dump = await dump_database(settings.database_url)
    gone = [device_hash_of(settings, app.app_id, d) for d in SUBJECT_DEVICES]
    gone.append(subscriber_hash_of(settings, app.app_id, SUBJECT_SUBSCRIBER))
    kept = [
        device_hash_of(settings, app.app_id, OTHER_DEVICE),
        subscriber_hash_of(settings, app.app_id, OTHER_SUBSCRIBER),
        *(device_hash_of(settings, other_app.app_id, d) for d in SUBJECT_DEVICES),
        subscriber_hash_of(settings, other_app.app_id, SUBJECT_SUBSCRIBER),
    ]
    assert [h for h in gone if h in dump] == []
    assert [h for h in kept if h not in dump] == []  # the dump is real: it holds the rest
    plaintext = [*SUBJECT_DEVICES, SUBJECT_SUBSCRIBER, OTHER_DEVICE, OTHER_SUBSCRIBER]
    assert [p for p in plaintext if p in dump] == []
    # The receipt names the app and the counts, not one identifier or hash.
    claims = await verify_with_jwks(client, body["receipt"])
    assert claims["scope"] == "subject" and claims["erased"] == body["erased"]
    assert not [v for v in [*plaintext, *gone] if v in json.dumps(claims)]
    # The logs hold neither an id nor a hash of one (and they did capture the requests).
    captured = capsys.readouterr()
    logs = captured.out + captured.err
    assert "/api/v1/subjects/erase" in logs
    assert [v for v in [*plaintext, *gone] if v in logs] == []


async def test_erasing_again_or_unknown_ids_answers_the_same_shape(
    subjects_client: Client, make_tenant: TenantFactory, settings: Settings
) -> None:
    client = subjects_client
    app = await make_app(make_tenant, "app-a")
    await register_device(client, app, SUBJECT_DEVICES[0])
    body = {"device_ids": [SUBJECT_DEVICES[0]]}

    first = await client.post(ERASE, headers=app.pk, json=body)
    again = await client.post(ERASE, headers=app.pk, json=body)
    unknown = await client.post(
        ERASE,
        headers=app.pk,
        json={
            "app_account_token": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "device_ids": ["never-registered"],
            "subscriber_ids": ["never-subscribed"],
        },
    )

    assert first.status_code == again.status_code == unknown.status_code == 200
    assert_erased(first.json()["erased"], {"device_tokens": 1})
    assert_erased(again.json()["erased"], {})
    assert_erased(unknown.json()["erased"], {})
    assert set(first.json()["erased"]) == set(unknown.json()["erased"])
    receipts = {r.json()["receipt"] for r in (first, again, unknown)}
    assert len(receipts) == 3  # each erasure has its own receipt (its own jti)
    assert await count_rows(settings, "ios_device_tokens") == 0


async def test_another_apps_key_erases_nothing_of_this_app(
    subjects_client: Client, make_tenant: TenantFactory, settings: Settings
) -> None:
    client = subjects_client
    app, other_app = await make_app(make_tenant, "app-a"), await make_app(make_tenant, "app-b")
    await register_device(client, app, SUBJECT_DEVICES[0])
    await subscribe(client, app, SUBJECT_SUBSCRIBER)
    body = {"device_ids": [SUBJECT_DEVICES[0]], "subscriber_ids": [SUBJECT_SUBSCRIBER]}

    # The other app, with its own key, erases its own (absent) subject: nothing of app-a.
    own = await client.post(ERASE, headers=other_app.pk, json=body)
    # The other app's key presented for app-a: refused like any wrong key.
    foreign = await client.post(
        ERASE,
        headers={"X-App-ID": app.app_id, "Authorization": f"Bearer {other_app.sk}"},
        json=body,
    )

    assert own.status_code == 200
    assert_erased(own.json()["erased"], {})
    assert_problem(foreign, 401, "unauthorized")
    assert await _rows(settings, app.app_id) == (1, 1)


HOSTILE_BODIES: dict[str, Any] = {
    "empty object": {},
    "only empty lists": {"device_ids": [], "subscriber_ids": []},
    "101 device ids": {"device_ids": [SUBJECT_DEVICES[0]] + [f"d{i}" for i in range(100)]},
    "101 subscriber ids": {"subscriber_ids": [f"s{i}" for i in range(101)]},
    "10,000 device ids": {"device_ids": [SUBJECT_DEVICES[0]] * 10_000},
    "an id of 257 characters": {"device_ids": [SUBJECT_DEVICES[0], "x" * 257]},
    "an empty id": {"device_ids": [SUBJECT_DEVICES[0], ""]},
    "a number as id": {"device_ids": [SUBJECT_DEVICES[0], 7]},
    "a nested list": {"device_ids": [[SUBJECT_DEVICES[0]]]},
    "an object as id": {"subscriber_ids": [{"id": SUBJECT_SUBSCRIBER}]},
    "a string, not a list": {"device_ids": SUBJECT_DEVICES[0]},
    "null list": {"device_ids": None, "subscriber_ids": [SUBJECT_SUBSCRIBER]},
    "a token that is no UUID": {
        "app_account_token": "not-a-uuid",
        "device_ids": [SUBJECT_DEVICES[0]],
    },
    "a huge token": {"app_account_token": "a" * 100_000, "device_ids": [SUBJECT_DEVICES[0]]},
    "a numeric token": {"app_account_token": 12345, "device_ids": [SUBJECT_DEVICES[0]]},
    "an unknown field": {"device_ids": [SUBJECT_DEVICES[0]], "user_id": "u1"},
    "a lone surrogate": {"device_ids": [SUBJECT_DEVICES[0], "\ud800"]},
    "a JSON array": [SUBJECT_DEVICES[0]],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BODIES))
async def test_hostile_or_oversize_input_is_422_and_erases_nothing(
    subjects_client: Client, make_tenant: TenantFactory, settings: Settings, case: str
) -> None:
    client = subjects_client
    app = await make_app(make_tenant, "app-a")
    await register_device(client, app, SUBJECT_DEVICES[0])
    await subscribe(client, app, SUBJECT_SUBSCRIBER)

    r = await client.post(
        ERASE,
        headers={**app.pk, "Content-Type": "application/json"},
        content=json.dumps(HOSTILE_BODIES[case]).encode(),
    )

    body = assert_problem(r, 422, "validation_error")
    assert body["errors"]
    assert await _rows(settings, app.app_id) == (1, 1)


async def test_a_body_that_is_not_json_is_refused_and_erases_nothing(
    subjects_client: Client, make_tenant: TenantFactory, settings: Settings
) -> None:
    client = subjects_client
    app = await make_app(make_tenant, "app-a")
    await register_device(client, app, SUBJECT_DEVICES[0])
    form = await client.post(ERASE, headers=app.pk, data={"device_ids": SUBJECT_DEVICES[0]})
    broken = await client.post(
        ERASE, headers={**app.pk, "Content-Type": "application/json"}, content=b'{"device_ids": ['
    )
    assert_problem(form, 415, "unsupported_media_type")
    assert broken.status_code == 422
    assert await _rows(settings, app.app_id) == (1, 0)


@pytest.mark.parametrize(
    "written",
    [
        "0F8FAD5B-D9CB-469F-A165-70867728950E",  # Swift's UUID().uuidString
        "0f8fad5bd9cb469fa16570867728950e",
        "{0f8fad5b-d9cb-469f-a165-70867728950e}",
        "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
    ],
)
def test_app_account_token_reaches_hash_of_in_canonical_lowercase(written: str) -> None:
    body = EraseSubjectIn.model_validate({"app_account_token": written})
    assert body.identifiers()["app_account_token"] == ["0f8fad5b-d9cb-469f-a165-70867728950e"]
    assert str(UUID(written)) == body.identifiers()["app_account_token"][0]


def _hash(kit: Any, app_id: str, value: str) -> str:
    return value


def test_register_subject_key_refuses_what_erasure_cannot_use() -> None:
    registry = LifecycleRegistry(TtlPolicy(90))
    with pytest.raises(ValueError, match="before its subject keys"):
        registry.register_subject_key(
            "device_tokens", DeviceToken.device_hash, identifier="device_ids", hash_of=_hash
        )
    registry.register("device_tokens", DeviceToken)
    with pytest.raises(ValueError, match="unknown subject identifier"):
        registry.register_subject_key(
            "device_tokens",
            DeviceToken.device_hash,
            identifier="emails",  # type: ignore[arg-type]
            hash_of=_hash,
        )
    with pytest.raises(ValueError, match="not a column"):
        registry.register_subject_key(
            "device_tokens",
            WebPushSubscription.subscriber_hash,
            identifier="subscriber_ids",
            hash_of=_hash,
        )
    with pytest.raises(ValueError, match="needs an index"):
        registry.register_subject_key(
            "device_tokens", DeviceToken.environment, identifier="device_ids", hash_of=_hash
        )
    registry.register_subject_key(
        "device_tokens", DeviceToken.device_hash, identifier="device_ids", hash_of=_hash
    )
    assert registry.subject_kinds() == ["device_tokens"]
    assert [(k.kind, k.column, k.identifier) for k in registry.subject_keys()] == [
        ("device_tokens", "device_hash", "device_ids")
    ]


async def test_rows_hashed_before_a_secret_key_rotation_are_erased_too(
    make_client: ClientFactory, make_tenant: TenantFactory, settings: Settings
) -> None:
    before = await make_client(webpush_allow_private_networks=True)
    app = await make_app(make_tenant, "app-a")
    await register_device(before, app, SUBJECT_DEVICES[0])
    await subscribe(before, app, SUBJECT_SUBSCRIBER)
    after = await make_client(
        secret_key="a-newer-secret-key-with-more-than-32-characters!!",
        previous_secret_keys=[settings.secret_key],
        webpush_allow_private_networks=True,
    )
    await register_device(after, app, SUBJECT_DEVICES[1])  # hashed under the new key

    r = await after.post(
        ERASE,
        headers=app.pk,
        json={"device_ids": SUBJECT_DEVICES, "subscriber_ids": [SUBJECT_SUBSCRIBER]},
    )

    assert r.status_code == 200, r.text
    assert_erased(r.json()["erased"], {"device_tokens": 2, "webpush_subscriptions": 1})
    assert await _rows(settings, app.app_id) == (0, 0)
