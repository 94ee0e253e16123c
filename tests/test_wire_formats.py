"""Every endpoint, real responses: each timestamp parses with Foundation's `.iso8601` strategy,
and each problem `type` resolves to a page about that problem.

One session drives every operation of /openapi.json (success paths where they are cheap, the
documented problem otherwise) and records every JSON body it gets back, including the export
file a `data_export` task stores. The walk then checks every string that looks like an instant.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from tests.conftest import Client, ClientFactory, TenantFactory
from tests.peers.apple_ca import transaction
from tests.storekit.conftest import (  # noqa: F401 - fixtures used by name
    APP_APPLE_ID,
    BUNDLE_ID,
    SHARED_SECRET,
    TestPKI,
    peer,
    pki,
    roots_dir,
)

# What `JSONDecoder.DateDecodingStrategy.iso8601` (ISO8601DateFormatter, .withInternetDateTime)
# accepts: no fractional seconds, `Z` or a numeric offset. SPEC 1 narrows it to `Z`.
FOUNDATION_ISO8601 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|[+-]\d{2}:\d{2})$")
SPEC_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
LOOKS_LIKE_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
INSTANT_KEYS = re.compile(r"(_at|_time|^next_run|^timestamp)$")


def _walk(value: Any, path: str, found: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and (
                LOOKS_LIKE_INSTANT.match(item) or INSTANT_KEYS.search(str(key))
            ):
                found.append((f"{path}.{key}", item))
            else:
                _walk(item, f"{path}.{key}", found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", found)
    elif isinstance(value, str) and LOOKS_LIKE_INSTANT.match(value):
        found.append((path, value))


class Recorder:
    """Every response of the session, keyed by the OpenAPI operation it answered."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.bodies: list[tuple[str, Any]] = []
        self.problem_types: set[str] = set()
        self.operations: set[tuple[str, str]] = set()
        schema = client.app.openapi()
        self.templates = [
            (method.upper(), path, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"))
            for path, item in schema["paths"].items()
            for method in item
        ]
        client.event_hooks["response"].append(self._record)

    async def _record(self, response: httpx.Response) -> None:
        await response.aread()
        request = response.request
        for method, path, pattern in self.templates:
            if method == request.method and pattern.match(request.url.path):
                self.operations.add((method, path))
        if "json" in response.headers.get("content-type", ""):
            body = response.json()
            self.bodies.append((f"{request.method} {request.url.path}", body))
            if isinstance(body, dict) and "type" in body and "code" in body:
                self.problem_types.add(urljoin(str(request.url), body["type"]))

    def all_operations(self) -> set[tuple[str, str]]:
        return {(method, path) for method, path, _ in self.templates}


async def _exercise_everything(client: Client, make_tenant: TenantFactory, ca: TestPKI) -> None:
    app = await make_tenant(
        "wire-app",
        bundle_id=BUNDLE_ID,
        app_apple_id=APP_APPLE_ID,
        appstore_shared_secret=SHARED_SECRET,
        notify_email="owner@example.com",
    )
    sk, pk = app.sk, app.pk
    api = "/api/v1"
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/health", headers={"X-App-ID": app.app_id})).status_code == 200
    assert (await client.get("/health/ready")).status_code == 200

    created = await client.post(f"{api}/drafts", headers=pk, json={"content": "hi"})
    assert created.status_code == 201, created.text
    draft_id = created.json()["id"]
    assert (await client.get(f"{api}/drafts", headers=sk)).status_code == 200
    assert (await client.get(f"{api}/drafts/{draft_id}", headers=pk)).status_code == 200
    replaced = await client.put(
        f"{api}/drafts/{draft_id}", headers=pk, json={"content": "hi again", "ttl_seconds": 61}
    )
    assert replaced.status_code == 200, replaced.text

    code = (
        await client.post(f"{api}/affiliate/generate", headers=pk, json={"code_id": "c-1"})
    ).json()["code"]
    converted = await client.post(
        f"{api}/affiliate/conversion", headers=sk, json={"code": code, "event_id": "e-1"}
    )
    assert converted.status_code == 200, converted.text
    stats = await client.get(f"{api}/affiliate/stats", headers=sk)
    assert stats.status_code == 200, stats.text

    token = {"token": "ab" * 32, "device_id": "device-1", "ttl_seconds": 3601}
    registered = await client.post(f"{api}/ios/register-token", headers=pk, json=token)
    assert registered.status_code == 200, registered.text
    pushed = await client.post(f"{api}/ios/push", headers=sk, json={"all": True, "badge": 1})
    assert pushed.status_code == 409  # no APNs key configured: a problem, with its type
    unregistered = await client.post(
        f"{api}/ios/unregister-token", headers=pk, json={"device_id": "device-1"}
    )
    assert unregistered.status_code == 200

    vapid = await client.get(f"{api}/web/vapid-public-key", headers=pk)
    assert vapid.status_code == 409  # Web Push not set up for this app: a problem, with its type
    subscription = {
        "endpoint": "https://push.example.com/s/1",
        "keys": {"p256dh": "x", "auth": "y"},
    }
    subscribed = await client.post(
        f"{api}/web/subscribe",
        headers=pk,
        json={"subscription": subscription, "subscriber_id": "user-1"},
    )
    assert subscribed.status_code == 422  # keys that are no P-256 point
    web_pushed = await client.post(
        f"{api}/web/push", headers=sk, json={"all": True, "notification": {"title": "Hi"}}
    )
    assert web_pushed.status_code == 409
    web_unsubscribed = await client.post(
        f"{api}/web/unsubscribe", headers=pk, json={"subscriber_id": "user-1"}
    )
    assert web_unsubscribed.status_code == 200

    signed = ca.trusted.sign(transaction(BUNDLE_ID, expires_in=timedelta(days=3)))
    receipt = await client.post(
        f"{api}/ios/validate-receipt", headers=pk, json={"signed_transaction": signed}
    )
    assert receipt.status_code == 200 and receipt.json()["status"] == "valid", receipt.text
    notified = await client.post(
        f"{api}/ios/notifications/{app.app_id}", json={"signedPayload": "x"}
    )
    assert notified.status_code == 400

    data = b"\x89PNG wire format"
    declared = await client.post(
        f"{api}/storage/objects",
        headers=pk,
        json={"content_type": "image/png", "content_length": len(data)},
    )
    assert declared.status_code == 201, declared.text
    upload = declared.json()["upload"]
    put = await client.request(
        upload["method"], upload["url"], headers=upload["headers"], content=data
    )
    assert put.status_code in (200, 201, 204), put.text
    object_id = declared.json()["object_id"]
    meta = await client.get(f"{api}/storage/objects/{object_id}", headers=pk)
    assert meta.status_code == 200
    assert (await client.get(meta.json()["download_url"])).content == data

    task = await client.post(
        f"{api}/bots/execute", headers=sk, json={"task_type": "data_export", "context": {}}
    )
    assert task.status_code == 200, task.text
    export = await client.get(task.json()["result"]["download_url"])
    assert export.status_code == 200 and export.json()
    assert (await client.get(f"{api}/bots/tasks/{task.json()['task_id']}", headers=sk)).is_success
    mailed = await client.post(
        f"{api}/bots/execute",
        headers=sk,
        json={"task_type": "email", "context": {"subject": "t"}, "mode": "async"},
    )
    assert mailed.status_code == 202, mailed.text
    await asyncio.sleep(0.3)  # the scheduler's first run sets its timestamps
    assert (await client.get(f"{api}/bots/tasks/{mailed.json()['task_id']}", headers=sk)).is_success
    cancelled = await client.delete(f"{api}/bots/tasks/{mailed.json()['task_id']}", headers=sk)
    assert cancelled.status_code in (200, 202, 409), cancelled.text  # queued, running or done

    mapped = await client.put(
        f"{api}/admin/entitlements",
        headers=sk,
        json={"entitlements": {"pro": {"products": ["com.example.pro.monthly"]}}},
    )
    assert mapped.status_code == 200, mapped.text
    buyer = str(uuid.uuid4())
    bought = transaction(BUNDLE_ID, expires_in=timedelta(days=3))
    bought["appAccountToken"] = buyer
    recorded = await client.post(
        f"{api}/entitlements/transactions",
        headers=pk,
        json={"signed_transaction": ca.trusted.sign(bought)},
    )
    assert recorded.status_code == 200, recorded.text
    checked = await client.post(
        f"{api}/entitlements/check", headers=pk, json={"app_account_token": buyer}
    )
    assert checked.json()["entitlements"]["pro"]["is_active"] is True
    checkout = await client.post(
        f"{api}/entitlements/stripe/checkout",
        headers=pk,
        json={
            "app_account_token": buyer,
            "price_id": "price_not_in_the_map",
            "success_url": "https://app.example.com/ok",
            "cancel_url": "https://app.example.com/no",
        },
    )
    assert checkout.status_code == 422  # a problem, with its type
    hook = await client.post(
        f"{api}/entitlements/stripe/webhook/{app.app_id}",
        content=b"{}",
        headers={"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"},
    )
    assert hook.status_code == 400
    assert (await client.get(f"{api}/entitlements/stats", headers=sk)).status_code == 200
    reconciled = await client.post(f"{api}/admin/entitlements/reconcile", headers=sk)
    assert reconciled.status_code == 200 and reconciled.json()["status"] == "not_configured"

    erased = await client.post(f"{api}/subjects/erase", headers=pk, json={"device_ids": ["d-1"]})
    assert erased.status_code == 200, erased.text
    assert (await client.get("/.well-known/jwks.json")).status_code == 200
    for path in ("stats", "scheduler-health", "health-detailed", "data-inventory", "retention"):
        assert (await client.get(f"{api}/admin/{path}", headers=sk)).status_code == 200, path
    assert (await client.post(f"{api}/admin/cleanup", headers=sk)).status_code == 200
    assert (await client.delete(f"{api}/storage/objects/{object_id}", headers=pk)).is_success
    assert (await client.delete(f"{api}/drafts/{draft_id}", headers=pk)).is_success
    assert (await client.delete(f"{api}/admin/data", headers=sk)).status_code == 200

    # problems of every family: auth, scope, format, schema, not found, media type
    problems = [
        await client.get(f"{api}/admin/stats"),
        await client.get(f"{api}/admin/stats", headers={"X-App-ID": "bad id!"}),
        await client.get(f"{api}/admin/stats", headers={"X-App-ID": app.app_id}),
        await client.get(f"{api}/admin/stats", headers=pk),
        await client.get(f"{api}/drafts/nope", headers=pk),
        await client.post(f"{api}/drafts", headers=pk, json={"content": 1}),
        await client.post(f"{api}/drafts", headers=pk, json={"content": "x", "ttl_seconds": 10**9}),
        await client.post(f"{api}/drafts", headers=pk, data={"content": "form"}),
        await client.post(
            f"{api}/bots/execute", headers=sk, json={"task_type": "nope", "context": {}}
        ),
        await client.get("/no/such/path"),
    ]
    assert all(r.status_code >= 400 for r in problems)


async def test_every_timestamp_and_problem_type_in_real_responses(
    make_client: ClientFactory,
    make_tenant: TenantFactory,
    pki: TestPKI,  # noqa: F811
    roots_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = await make_client(
        apple_root_certs_dir=roots_dir,
        run_background_jobs=True,
        cleanup_interval_seconds=0.1,
    )
    recorder = Recorder(client)
    await _exercise_everything(client, make_tenant, pki)

    missing = recorder.all_operations() - recorder.operations
    assert missing == set(), f"operations this test does not exercise yet: {sorted(missing)}"

    found: list[tuple[str, str]] = []
    for where, body in recorder.bodies:
        _walk(body, where, found)
    assert len(found) > 30, found
    for where, value in found:
        assert FOUNDATION_ISO8601.match(value), f"{where}: {value!r} fails Swift's .iso8601"
        assert SPEC_TIMESTAMP.match(value), f"{where}: {value!r} is not YYYY-MM-DDTHH:MM:SSZ"

    assert len(recorder.problem_types) >= 6, recorder.problem_types
    for url in sorted(recorder.problem_types):
        assert urlsplit(url).netloc == "testserver", f"{url} points at another host"
        page = await client.get(url)
        assert page.status_code == 200, url
        assert "text/html" in page.headers["content-type"]
        code = url.rsplit("/", 1)[1]
        assert code in page.text
        as_json = await client.get(url, headers={"Accept": "application/json"})
        assert as_json.status_code == 200 and as_json.json()["code"] == code
