"""The push engine against a misbehaving APNs: GOAWAY (graceful and abrupt), dropped
connections, small MAX_CONCURRENT_STREAMS and windows, slow answers, two tenants at once.

Every test checks what a user sees (the counts of POST /push, the rows left) and what the peer
got: each notification processed exactly once, dead tokens pruned, limits never exceeded.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from stateless.kit.push.h2client import H2Client
from tests.bots.broadcasts import broadcast, counts
from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.ios.conftest import HIGH_LIMITS, KEY_ID, TEAM_ID, ApnsKey, hex_token, sql
from tests.peers.apns import ApnsPeer

REGISTER = "/api/v1/ios/register-token"
PUSH = "/api/v1/ios/push"
ALERT = {"title": "Hello", "body": "World"}


async def register_many(
    client: Client, tenant: TenantHandle, count: int, prefix: str = "a"
) -> list[str]:
    tokens = [hex_token(i, prefix) for i in range(count)]
    for i, token in enumerate(tokens):
        r = await client.post(
            REGISTER, headers=tenant.pk, json={"token": token, "device_id": f"{prefix}-{i}"}
        )
        assert r.status_code == 200, r.text
    return tokens


def pool(client: Client) -> H2Client:
    pools: dict[str, H2Client] = client.app.state.container.apns.pools
    return pools["production"]


async def push_all(client: Client, tenant: TenantHandle) -> dict[str, Any]:
    task = await broadcast(client, tenant.sk, PUSH, {"all": True, "alert": ALERT})
    return {**counts(task), "results": []}


def assert_each_processed_once(peer: ApnsPeer, tokens: list[str]) -> None:
    counts: dict[str, int] = {}
    for got in peer.received:
        counts[got.token] = counts.get(got.token, 0) + 1
    assert {t: n for t, n in counts.items() if n != 1} == {}
    assert set(counts) == set(tokens)


async def test_graceful_goaway_drains_in_flight_streams_and_retries_the_rest_once(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer
) -> None:
    tokens = await register_many(ios_client, ios_tenant, 300)
    for token in tokens[:30]:
        apns_peer.answer(token, (410, "Unregistered"))
    for token in tokens[::7]:  # slow answers: still in flight when GOAWAY goes out
        apns_peer.delays[token] = [0.2]
    apns_peer.goaway_after = 40
    apns_peer.misbehave_connections = 3
    opened = pool(ios_client).connections_opened

    body = await push_all(ios_client, ios_tenant)

    assert body == {"sent": 270, "failed": 0, "removed": 30, "results": []}
    assert_each_processed_once(apns_peer, tokens)
    assert apns_peer.goaways == 3
    assert apns_peer.answered_after_goaway > 0  # streams <= last_stream_id finished there
    assert pool(ios_client).connections_opened >= opened + 3  # reconnected each time
    assert await sql(ios_client, "SELECT count(*) FROM ios_device_tokens") == [(270,)]
    assert apns_peer.protocol_errors == []


async def test_abrupt_goaway_and_dropped_connections_lose_and_double_nothing(
    ios_client: Client, ios_tenant: TenantHandle, apns_peer: ApnsPeer
) -> None:
    tokens = await register_many(ios_client, ios_tenant, 200)
    for token in tokens[:20]:
        apns_peer.answer(token, (400, "BadDeviceToken"))
    for token in tokens[20:30]:
        apns_peer.answer(token, (400, "BadCollapseId"))  # reported, token kept
    apns_peer.goaway_abrupt_after = 30
    apns_peer.misbehave_connections = 2

    body = await push_all(ios_client, ios_tenant)

    assert body == {"sent": 170, "failed": 10, "removed": 20, "results": []}
    assert_each_processed_once(apns_peer, tokens)
    assert apns_peer.goaways == 2

    # Now connections that just close, without a GOAWAY (a peer reset, a load balancer).
    apns_peer.received.clear()
    apns_peer.goaway_abrupt_after = None
    apns_peer.close_after = 25
    # The live connection and two new ones drop: three losses at most for any notification,
    # within its four attempts.
    apns_peer.misbehave_connections = apns_peer.connections + 2
    body = await push_all(ios_client, ios_tenant)
    assert body == {"sent": 170, "failed": 10, "removed": 0, "results": []}
    assert_each_processed_once(apns_peer, tokens[20:])
    assert await sql(ios_client, "SELECT count(*) FROM ios_device_tokens") == [(180,)]


async def test_peer_settings_are_honoured_small_streams_and_windows(
    ios_client: Client,
    ios_tenant: TenantHandle,
    apns_peer: ApnsPeer,
) -> None:
    # Reconfigure the peer before the app's first connection to it.
    apns_peer.max_concurrent_streams = 3
    apns_peer.initial_window_size = 16  # smaller than any payload: bodies need WINDOW_UPDATEs
    apns_peer.delay_seconds = 0.005
    tokens = await register_many(ios_client, ios_tenant, 120)
    task = await broadcast(
        ios_client,
        ios_tenant.sk,
        PUSH,
        {"all": True, "alert": ALERT, "data": {"padding": "x" * 300}},
    )
    assert counts(task) == {"sent": 120, "failed": 0, "removed": 0}, task
    assert_each_processed_once(apns_peer, tokens)
    assert apns_peer.received[0].payload["padding"] == "x" * 300
    assert 1 <= apns_peer.max_open_streams <= 3
    assert apns_peer.protocol_errors == []  # h2 on the peer saw no stream or window overrun


async def test_slow_answers_time_out_are_retried_then_reported(
    make_client: ClientFactory,
    ios_client: Client,
    ios_tenant: TenantHandle,
    apns_peer: ApnsPeer,
    sandbox_peer: ApnsPeer,
) -> None:
    settings = ios_client.app.state.container.settings
    client = await make_client(
        apns_production_url=apns_peer.url,
        apns_sandbox_url=sandbox_peer.url,
        apns_ca_file=settings.apns_ca_file,
        apns_request_timeout_seconds=0.3,
    )
    tokens = await register_many(client, ios_tenant, 6)
    apns_peer.delays[tokens[0]] = [2.0, 0.0]  # first attempt too slow, second fine
    apns_peer.delays[tokens[1]] = [2.0]  # always too slow
    started = time.monotonic()
    r = await client.post(
        PUSH, headers=ios_tenant.sk, json={"device_ids": ["a-0", "a-1", "a-2"], "badge": 1}
    )
    assert r.json()["results"] == [
        {"device_id": "a-0", "status": "sent", "reason": None},
        {"device_id": "a-1", "status": "failed", "reason": "Timeout"},
        {"device_id": "a-2", "status": "sent", "reason": None},
    ]
    assert time.monotonic() - started < 5  # 4 attempts of 0.3 s plus backoff, never 2 s each
    # A cancelled (timed out) request is not delivered: the peer processed each token once.
    assert apns_peer.delivered(tokens[0]) == 1 and apns_peer.attempts(tokens[0]) == 1
    assert apns_peer.attempts(tokens[1]) == 0
    assert await sql(client, "SELECT count(*) FROM ios_device_tokens") == [(6,)]


async def test_one_tenants_broadcast_does_not_starve_another(
    make_client: ClientFactory,
    ios_client: Client,
    ios_tenant: TenantHandle,
    make_tenant: TenantFactory,
    apns_key: ApnsKey,
    apns_peer: ApnsPeer,
    sandbox_peer: ApnsPeer,
) -> None:
    settings = ios_client.app.state.container.settings
    client = await make_client(
        apns_production_url=apns_peer.url,
        apns_sandbox_url=sandbox_peer.url,
        apns_ca_file=settings.apns_ca_file,
        apns_max_concurrency=64,
        apns_tenant_max_concurrency=4,
    )
    small = await make_tenant(
        "app-small",
        bundle_id="com.example.other",
        apns_team_id=TEAM_ID,
        apns_key_id=KEY_ID,
        apns_key_p8=apns_key.private_pem,
        rate_limits=HIGH_LIMITS,
    )
    big_tokens = await register_many(client, ios_tenant, 160, prefix="b")
    small_tokens = await register_many(client, small, 8, prefix="c")
    apns_peer.delay_seconds = 0.05  # the big broadcast takes 160 / 4 * 0.05 = 2 s
    done: dict[str, float] = {}

    async def broadcast(tenant: TenantHandle, name: str) -> dict[str, Any]:
        body = await push_all(client, tenant)
        done[name] = time.monotonic()
        return body

    big_started = time.monotonic()
    big = asyncio.create_task(broadcast(ios_tenant, "big"))
    while apns_peer.count < 8:  # the big one is under way
        await asyncio.sleep(0.01)
    small_started = time.monotonic()
    small_body = await broadcast(small, "small")
    big_body = await big

    assert small_body == {"sent": 8, "failed": 0, "removed": 0, "results": []}
    assert big_body == {"sent": 160, "failed": 0, "removed": 0, "results": []}
    # The small one finished first, in well under half the big one's time (a shared, busy
    # machine makes absolute durations meaningless).
    assert done["small"] < done["big"]
    assert done["small"] - small_started < (done["big"] - big_started) / 2
    assert apns_peer.max_in_flight["com.example.app"] <= 4  # the cap held for each tenant
    assert apns_peer.max_in_flight["com.example.other"] <= 4
    assert_each_processed_once(apns_peer, big_tokens + small_tokens)
