"""POST /web/push end to end against the local push service: RFC 8291 payloads decrypted by
http_ece, VAPID checked by the peer, answers scripted per subscription."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from stateless.config import Settings
from tests.bots.broadcasts import broadcast, counts
from tests.bots.conftest import execute
from tests.conftest import Client, ClientFactory, TenantFactory
from tests.ios.conftest import sql
from tests.peers.webpush import WebPushPeer
from tests.privacy import assert_not_stored
from tests.test_core import assert_problem
from tests.webpush.conftest import (
    CONTACT,
    PUSH,
    SUBSCRIBE,
    UNSUBSCRIBE,
    VAPID_KEY,
    WebApp,
    configure_web_app,
    subscribe,
)

NOTE = {"title": "Hello", "body": "World", "url": "https://app.example.com/inbox"}


def sub_id(subscription: dict[str, object]) -> str:
    return str(subscription["endpoint"]).rsplit("/", 1)[1]


async def test_vapid_key_is_409_until_configured_then_the_pages_key(
    web_client: Client, make_tenant: TenantFactory, push_service: WebPushPeer
) -> None:
    bare = await make_tenant("bare")
    assert_problem(await web_client.get(VAPID_KEY, headers=bare.pk), 409, "webpush_not_configured")
    r = await web_client.post(PUSH, headers=bare.sk, json={"all": True, "notification": NOTE})
    body = assert_problem(r, 409, "webpush_not_configured")
    assert "--webpush-generate-keys" in body["detail"]
    app = await configure_web_app(web_client, make_tenant, push_service)
    raw = base64.urlsafe_b64decode(app.public_key + "=" * (-len(app.public_key) % 4))
    assert len(raw) == 65 and raw[0] == 4 and "=" not in app.public_key
    # the publishable key may subscribe but not push
    r = await web_client.post(PUSH, headers=app.tenant.pk, json={"all": True, "notification": NOTE})
    assert_problem(r, 403, "insufficient_scope")


async def test_broadcast_to_a_thousand_subscribers_with_mixed_answers(
    web_client: Client, web_app: WebApp, push_service: WebPushPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1,001 listed ids answered inline (per-id results): just above the default PUSH_SYNC_MAX
    monkeypatch.setattr(web_client.app.state.container.settings, "push_sync_max", 1001)
    subs = {f"subscriber-{i}": push_service.new_subscription() for i in range(1000)}
    for subscriber_id, subscription in subs.items():
        await subscribe(web_client, web_app, subscriber_id, subscription)
    ids = [sub_id(s) for s in subs.values()]
    script: dict[range, list[tuple[int, dict[str, str]]]] = {
        range(0, 100): [(410, {})],
        range(100, 150): [(404, {})],
        range(150, 200): [(429, {"Retry-After": "1"}), (201, {})],
        range(200, 250): [(500, {}), (201, {})],
        range(250, 260): [(503, {})],  # never recovers
        range(260, 280): [(413, {})],  # reported, kept
        range(280, 290): [(400, {})],
    }
    for indexes, answers in script.items():
        for i in indexes:
            push_service.answer(ids[i], *answers)

    listed = [*subs, "never-subscribed"]
    started = time.monotonic()
    r = await web_client.post(
        PUSH,
        headers=web_app.tenant.sk,
        json={
            "subscriber_ids": listed,
            "notification": NOTE,
            "data": {"thread": 7},
            "ttl": 3600,
            "urgency": "high",
            "topic": "inbox",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["sent"], body["removed"], body["failed"]) == (810, 150, 41)
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured
    results = body["results"]
    assert [x["subscriber_id"] for x in results] == listed
    by_id = {x["subscriber_id"]: x for x in results}
    assert by_id["subscriber-0"] == {
        "subscriber_id": "subscriber-0",
        "status": "removed",
        "reason": "HTTP410",
    }
    assert by_id["subscriber-120"]["status"] == "removed"
    assert by_id["subscriber-160"] == {
        "subscriber_id": "subscriber-160",
        "status": "sent",
        "reason": None,
    }
    assert by_id["subscriber-255"] == {
        "subscriber_id": "subscriber-255",
        "status": "failed",
        "reason": "HTTP503",
    }
    assert by_id["subscriber-270"]["reason"] == "HTTP413"
    assert by_id["never-subscribed"]["status"] == "not_subscribed"

    # gone subscriptions are deleted, the others stay
    assert await sql(web_client, "SELECT count(*) FROM webpush_subscriptions") == [(850,)]
    for i in (150, 199, 200, 249):
        assert push_service.delivered(ids[i]) == 1 and push_service.attempts(ids[i]) == 2
    for i in (250, 259):
        assert push_service.attempts(ids[i]) == 3
    assert [i for i in range(290, 1000) if push_service.delivered(ids[i]) != 1] == []
    assert len(push_service.received) == 1000 + 50 + 50 + 10 * 2
    assert push_service.rejected == []
    first = push_service.received[0]
    assert first.payload == {"notification": NOTE, "data": {"thread": 7}}
    assert first.headers["ttl"] == "3600"
    assert first.headers["urgency"] == "high" and first.headers["topic"] == "inbox"
    assert first.headers["content-encoding"] == "aes128gcm"
    assert first.http_version == "2"
    assert first.vapid_claims["aud"] == push_service.url
    assert first.vapid_claims["sub"] == CONTACT
    assert first.vapid_claims["exp"] <= time.time() + 24 * 3600
    assert len({r.headers["authorization"] for r in push_service.received}) == 1  # cached

    # pushing to everyone: counts only, the removed subscriptions are not tried again
    push_service.received.clear()
    task = await broadcast(web_client, web_app.tenant.sk, PUSH, {"all": True, "notification": NOTE})
    assert counts(task) == {"sent": 810, "failed": 40, "removed": 0}
    pushed = {x.subscription_id for x in push_service.received}
    assert len(pushed) == 850 and not pushed & set(ids[:150])


async def test_http1_push_service_and_declarative_payload(
    make_client: ClientFactory, make_tenant: TenantFactory, tmp_path: Path
) -> None:
    peer = WebPushPeer(alpn=("http/1.1",))
    async with peer.running(tmp_path / "h1"):
        client = await make_client(
            webpush_ca_file=peer.ca_file, webpush_allow_private_networks=True
        )
        app = await configure_web_app(client, make_tenant, peer)
        subscription = peer.new_subscription()
        await subscribe(client, app, "reader-1", subscription)
        r = await client.post(
            PUSH,
            headers=app.tenant.sk,
            json={"subscriber_ids": ["reader-1"], "notification": NOTE, "declarative": True},
        )
        assert r.status_code == 200, r.text
        assert r.json()["sent"] == 1
        received = peer.received[0]
        assert received.http_version == "1.1"
        assert received.payload == {
            "web_push": 8030,
            "notification": {
                "title": "Hello",
                "navigate": "https://app.example.com/inbox",
                "body": "World",
            },
        }
        assert received.headers["ttl"] == str(28 * 24 * 3600)
        r = await client.post(
            PUSH,
            headers=app.tenant.sk,
            json={"all": True, "notification": {"title": "x"}, "declarative": True},
        )
        assert_problem(r, 422, "validation_error")


async def test_oversized_payload_is_413_before_anything_is_sent(
    web_client: Client, web_app: WebApp, push_service: WebPushPeer
) -> None:
    await subscribe(web_client, web_app, "big-1", push_service.new_subscription())
    r = await web_client.post(
        PUSH,
        headers=web_app.tenant.sk,
        json={"subscriber_ids": ["big-1"], "data": {"blob": "x" * 4000}},
    )
    body = assert_problem(r, 413, "payload_too_large")
    assert "3993" in body["detail"]
    assert push_service.count == 0
    # the largest payload that fits goes out as exactly 4096 bytes
    filler = "y" * (3993 - len('{"data":{"blob":""}}'))
    r = await web_client.post(
        PUSH,
        headers=web_app.tenant.sk,
        json={"subscriber_ids": ["big-1"], "data": {"blob": filler}},
    )
    assert r.status_code == 200 and r.json()["sent"] == 1, r.text
    assert push_service.received[0].body_bytes == 4096


async def test_send_time_guard_refuses_a_private_endpoint_stored_earlier(
    web_client: Client,
    web_app: WebApp,
    push_service: WebPushPeer,
    make_client: ClientFactory,
) -> None:
    """A subscription accepted while private networks were allowed is still checked per
    connection when sending: nothing reaches a private address once the flag is off."""
    await subscribe(web_client, web_app, "late-1", push_service.new_subscription())
    strict = await make_client(
        webpush_ca_file=push_service.ca_file, webpush_allow_private_networks=False
    )
    task = await broadcast(strict, web_app.tenant.sk, PUSH, {"all": True, "data": {"a": 1}})
    assert counts(task) == {"sent": 0, "failed": 1, "removed": 0}
    r = await strict.post(
        PUSH, headers=web_app.tenant.sk, json={"subscriber_ids": ["late-1"], "data": {"a": 1}}
    )
    assert r.json()["results"][0]["reason"] == "EndpointNotAllowed"
    assert push_service.count == 0


async def test_push_task_targets_web_and_all(
    web_client: Client,
    web_app: WebApp,
    push_service: WebPushPeer,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    subs = [push_service.new_subscription() for _ in range(3)]
    names = [f"task-subscriber-{i}-9c1e" for i in range(3)]
    for name, subscription in zip(names, subs, strict=True):
        await subscribe(web_client, web_app, name, subscription)
    push_service.answer(sub_id(subs[0]), (410, {}))
    r = await execute(
        web_client,
        web_app.tenant,
        "push",
        {"target": "web", "subscriber_ids": [*names, "nobody"], "notification": NOTE},
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {
        "sent": 2,
        "failed": 1,
        "removed": 1,
        "reasons": {"HTTP410": 1, "NotSubscribed": 1},
    }
    # `all` needs both bodies, and APNs configured for the iOS half
    r = await execute(
        web_client, web_app.tenant, "push", {"target": "all", "web": {"all": True, "data": {}}}
    )
    assert_problem(r, 422, "validation_error")
    r = await execute(
        web_client,
        web_app.tenant,
        "push",
        {
            "target": "all",
            "web": {"all": True, "data": {"x": 1}},
            "ios": {"all": True, "badge": 1},
        },
    )
    assert_problem(r, 422, "apns_not_configured")
    r = await execute(web_client, web_app.tenant, "push", {"target": "tv", "all": True})
    assert_problem(r, 422, "validation_error")
    captured = capsys.readouterr()
    secrets = [s["endpoint"] for s in subs] + [s["keys"]["auth"] for s in subs]
    await assert_not_stored(settings, [*names, *secrets], logs=captured.out + captured.err)


async def test_unsubscribe_is_idempotent_and_unknown_ids_are_not_subscribed(
    web_client: Client, web_app: WebApp, push_service: WebPushPeer
) -> None:
    await subscribe(web_client, web_app, "leaver", push_service.new_subscription())
    for _ in range(2):
        r = await web_client.post(
            UNSUBSCRIBE, headers=web_app.tenant.pk, json={"subscriber_id": "leaver"}
        )
        assert r.status_code == 200 and r.json() == {"status": "unsubscribed"}
    assert await sql(web_client, "SELECT count(*) FROM webpush_subscriptions") == [(0,)]
    r = await web_client.post(
        PUSH, headers=web_app.tenant.sk, json={"subscriber_ids": ["leaver"], "data": {}}
    )
    assert r.json()["results"] == [
        {"subscriber_id": "leaver", "status": "not_subscribed", "reason": "NotSubscribed"}
    ]
    assert push_service.count == 0
    assert SUBSCRIBE  # imported for symmetry with the other tests


async def test_a_long_retry_after_is_reported_not_waited_for(
    web_client: Client, web_app: WebApp, push_service: WebPushPeer
) -> None:
    subscription = push_service.new_subscription()
    await subscribe(web_client, web_app, "busy", subscription)
    push_service.answer(sub_id(subscription), (429, {"Retry-After": "3600"}))
    started = time.monotonic()
    r = await web_client.post(
        PUSH, headers=web_app.tenant.sk, json={"subscriber_ids": ["busy"], "data": {"a": 1}}
    )
    assert time.monotonic() - started < 5
    assert r.json()["results"] == [
        {"subscriber_id": "busy", "status": "failed", "reason": "HTTP429"}
    ]
    assert push_service.attempts(sub_id(subscription)) == 1
    assert await sql(web_client, "SELECT count(*) FROM webpush_subscriptions") == [(1,)]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from stateless.kit.push.retry import retry_after_seconds

    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = 1_800_000_000.0
    assert retry_after_seconds("Fri, 15 Jan 2027 08:00:02 GMT", now=now) == 2.0
    assert retry_after_seconds("Fri, 15 Jan 2027 07:00:00 GMT", now=now) == 0.0
