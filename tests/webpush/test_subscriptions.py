"""POST /web/subscribe and /unsubscribe: validation, SSRF guard, lifetimes, privacy, admin."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stateless.config import Settings
from tests.bots.broadcasts import broadcast, counts
from tests.conftest import Client, ClientFactory, TenantFactory
from tests.ios.conftest import sql
from tests.peers.webpush import WebPushPeer
from tests.privacy import assert_not_stored
from tests.test_cli import run_cli
from tests.test_core import assert_problem
from tests.webpush.conftest import (
    PUSH,
    SUBSCRIBE,
    UNSUBSCRIBE,
    WebApp,
    configure_web_app,
    subscribe,
)

DAY = 24 * 3600


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.20",
        "169.254.169.254",
        "localhost",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
        "172.16.0.1",
        "100.64.0.1",
        "[fe80::1]",
        "[fc00::1]",
        "[::ffff:10.0.0.1]",
        "[::]",
    ],
)
async def test_private_endpoints_are_refused(
    make_client: ClientFactory, make_tenant: TenantFactory, host: str, tmp_path: Path
) -> None:
    peer = WebPushPeer()
    peer.url = "https://push.example"  # only the keys of the subscription are used
    client = await make_client(webpush_allow_private_networks=False)
    app = await configure_web_app_without_peer(client, make_tenant)
    subscription = peer.new_subscription()
    subscription["endpoint"] = f"https://{host}/push/abc"
    r = await client.post(
        SUBSCRIBE,
        headers=app.tenant.pk,
        json={"subscription": subscription, "subscriber_id": "s1"},
    )
    body = assert_problem(r, 422, "endpoint_not_allowed")
    assert body["errors"][0]["loc"] == ["body", "subscription", "endpoint"]
    assert await sql(client, "SELECT count(*) FROM webpush_subscriptions") == [(0,)]


async def configure_web_app_without_peer(client: Client, make_tenant: TenantFactory) -> WebApp:
    peer = WebPushPeer()
    return await configure_web_app(client, make_tenant, peer)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://push.example/abc",  # https only
        "https://user:pw@push.example/abc",
        "ftp://push.example/abc",
        "https:///abc",
        "not a url at all",
        "https://push.example/a b",
        "https://push.example/\u00e9t\u00e9",
    ],
)
async def test_non_https_or_odd_endpoints_are_refused(
    web_client: Client, web_app: WebApp, push_service: WebPushPeer, endpoint: str
) -> None:
    subscription = push_service.new_subscription()
    subscription["endpoint"] = endpoint
    r = await web_client.post(
        SUBSCRIBE,
        headers=web_app.tenant.pk,
        json={"subscription": subscription, "subscriber_id": "s1"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] in ("endpoint_not_allowed", "validation_error")
    assert await sql(web_client, "SELECT count(*) FROM webpush_subscriptions") == [(0,)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("p256dh", _b64(b"\x04" + b"\x01" * 64)),  # right size, not on the curve
        ("p256dh", _b64(b"\x04" + b"\x01" * 10)),  # too short
        ("p256dh", _b64(b"\x02" + b"\x01" * 32)),  # compressed form
        ("p256dh", "!!!not-base64!!!"),
        ("auth", _b64(b"\x01" * 15)),
        ("auth", _b64(b"\x01" * 32)),
        ("auth", "***"),
    ],
)
async def test_invalid_keys_are_422(
    web_client: Client, web_app: WebApp, push_service: WebPushPeer, field: str, value: str
) -> None:
    subscription = push_service.new_subscription()
    subscription["keys"][field] = value
    r = await web_client.post(
        SUBSCRIBE,
        headers=web_app.tenant.pk,
        json={"subscription": subscription, "subscriber_id": "s1"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_subscription_keys"
    assert await sql(web_client, "SELECT count(*) FROM webpush_subscriptions") == [(0,)]


async def test_lifetimes_default_max_and_expiration_time(
    web_client: Client, web_app: WebApp, push_service: WebPushPeer
) -> None:
    now = datetime.now(UTC)
    body = await subscribe(web_client, web_app, "a", push_service.new_subscription())
    assert abs(_parse(body["expires_at"]) - (now + timedelta(days=30))) < timedelta(seconds=5)
    body = await subscribe(
        web_client, web_app, "a", push_service.new_subscription(), ttl_seconds=60 * DAY
    )
    assert abs(_parse(body["expires_at"]) - (now + timedelta(days=60))) < timedelta(seconds=5)
    r = await web_client.post(
        SUBSCRIBE,
        headers=web_app.tenant.pk,
        json={
            "subscription": push_service.new_subscription(),
            "subscriber_id": "a",
            "ttl_seconds": 60 * DAY + 1,
        },
    )
    assert_problem(r, 422, "ttl_out_of_range")
    # never kept past the browser's own expirationTime (milliseconds)
    ends = int((now + timedelta(hours=2)).timestamp() * 1000) + 789
    body = await subscribe(web_client, web_app, "b", push_service.new_subscription(ends))
    assert _parse(body["expires_at"]) == datetime.fromtimestamp(ends // 1000, tz=UTC)
    past = int((now - timedelta(minutes=1)).timestamp() * 1000)
    r = await web_client.post(
        SUBSCRIBE,
        headers=web_app.tenant.pk,
        json={"subscription": push_service.new_subscription(past), "subscriber_id": "c"},
    )
    assert_problem(r, 422, "subscription_expired")
    # re-subscribing the same subscriber replaces the row (upsert)
    assert await sql(web_client, "SELECT count(*) FROM webpush_subscriptions") == [(2,)]


async def test_stats_inventory_erase_and_expiry(
    web_client: Client, web_app: WebApp, push_service: WebPushPeer, make_tenant: TenantFactory
) -> None:
    other = await configure_web_app(web_client, make_tenant, push_service, "web-b")
    for i in range(3):
        await subscribe(web_client, web_app, f"s{i}", push_service.new_subscription())
    await subscribe(web_client, other, "o1", push_service.new_subscription())
    sk = web_app.tenant.sk
    stats = (await web_client.get("/api/v1/admin/stats", headers=sk)).json()
    assert stats["items"]["webpush_subscriptions"] == 3
    inventory = (await web_client.get("/api/v1/admin/data-inventory", headers=sk)).json()
    kinds = {k["kind"]: k for k in inventory["kinds"]}
    assert kinds["webpush_subscriptions"]["default_ttl_seconds"] == 30 * DAY
    assert kinds["webpush_subscriptions"]["max_ttl_seconds"] == 60 * DAY
    # an expired row is invisible at once, and cleanup deletes it
    await sql(
        web_client,
        "UPDATE webpush_subscriptions SET expires_at = :t WHERE app_id = 'web-a' "
        "AND subscriber_hash = (SELECT min(subscriber_hash) FROM webpush_subscriptions "
        "WHERE app_id = 'web-a')",
        t=datetime.now(UTC) - timedelta(seconds=1),
    )
    stats = (await web_client.get("/api/v1/admin/stats", headers=sk)).json()
    assert stats["items"]["webpush_subscriptions"] == 2
    assert (
        counts(await broadcast(web_client, sk, PUSH, {"all": True, "data": {"n": 1}}))["sent"] == 2
    )
    r = await web_client.post("/api/v1/admin/cleanup", headers=sk)
    assert r.json()["deleted"]["webpush_subscriptions"] == 1
    r = await web_client.delete("/api/v1/admin/data", headers=sk)
    assert r.json()["deleted"]["webpush_subscriptions"] == 2
    rows = await sql(web_client, "SELECT app_id FROM webpush_subscriptions")
    assert rows == [("web-b",)]  # the other app's subscription is untouched


async def test_no_endpoint_key_or_subscriber_id_in_the_dump_or_logs(
    web_client: Client,
    web_app: WebApp,
    push_service: WebPushPeer,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    subs = {f"reader-{i}@example.com": push_service.new_subscription() for i in range(20)}
    for name, subscription in subs.items():
        await subscribe(web_client, web_app, name, subscription)
    push_service.answer(sub_id_of(subs["reader-0@example.com"]), (410, {}))
    r = await web_client.post(
        PUSH, headers=web_app.tenant.sk, json={"subscriber_ids": list(subs), "data": {"k": 1}}
    )
    assert r.json()["sent"] == 19
    await broadcast(web_client, web_app.tenant.sk, PUSH, {"all": True, "data": {"k": 2}})
    await web_client.post(
        UNSUBSCRIBE, headers=web_app.tenant.pk, json={"subscriber_id": "reader-1@example.com"}
    )
    captured = capsys.readouterr()
    values = list(subs)
    for subscription in subs.values():
        values += [
            subscription["endpoint"],
            sub_id_of(subscription),
            subscription["keys"]["p256dh"],
            subscription["keys"]["auth"],
        ]
    await assert_not_stored(settings, values, logs=captured.out + captured.err)


def sub_id_of(subscription: dict[str, object]) -> str:
    return str(subscription["endpoint"]).rsplit("/", 1)[1]


async def test_cli_generates_keys_and_sets_the_contact(
    settings: Settings, make_client: ClientFactory, tmp_path: Path
) -> None:
    assert run_cli(settings, "tenants", "create", "cli-web", cwd=tmp_path).returncode == 0
    done = run_cli(
        settings,
        "tenants",
        "configure",
        "cli-web",
        "--webpush-generate-keys",
        "--webpush-contact",
        "mailto:ops@example.com",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("webpush public key: "))
    public_key = line.split(": ", 1)[1]
    assert len(base64.urlsafe_b64decode(public_key + "=")) == 65
    bad = run_cli(
        settings, "tenants", "configure", "cli-web", "--webpush-contact", "ops", cwd=tmp_path
    )
    assert bad.returncode == 1 and "mailto:" in bad.stderr
    helped = run_cli(settings, "tenants", "configure", "--help", cwd=tmp_path)
    assert "--webpush-generate-keys" in helped.stdout and "mailto:ops@example.com" in helped.stdout
