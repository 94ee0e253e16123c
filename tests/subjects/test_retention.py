"""GET /api/v1/admin/retention and the deletion-lag gauges: figures rise while expired rows wait
(cleanup paused: the test apps run no background jobs), and fall to 0 after one pass."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from stateless.config import Settings
from stateless.container import Container
from stateless.lifecycle.scheduler import CleanupScheduler
from stateless.lifecycle.wiring import cleanup_service
from tests.conftest import Client, TenantFactory, TenantHandle
from tests.subjects.conftest import (
    ERASE,
    RETENTION,
    device_hash_of,
    make_app,
    register_device,
    subscribe,
)
from tests.support import count_rows, expire_rows, sql
from tests.test_core import assert_problem

DAY = 86400
FIELDS = {
    "live",
    "expired_awaiting_erasure",
    "oldest_expired_age_seconds",
    "max_ttl_seconds",
    "erased_last_24h",
}


def _scheduler(client: Client) -> CleanupScheduler:
    """The app's own cleanup job, run one pass at a time by the test (the leader's work)."""
    container: Container = client.app.state.container
    return CleanupScheduler(
        cleanup_service(container),
        container.background.cleanup,
        container.metrics,
        container.settings.cleanup_interval_seconds,
    )


async def _one_pass(client: Client) -> None:
    await _scheduler(client).run_once(asyncio.Event())


async def _retention(client: Client, tenant: TenantHandle) -> dict[str, Any]:
    r = await client.get(RETENTION, headers=tenant.sk)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _gauge(metrics: str, name: str, kind: str) -> float | None:
    match = re.search(rf'^{name}{{kind="{kind}"}} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else None


async def test_figures_rise_while_expired_rows_wait_then_fall_to_zero_after_one_pass(
    subjects_client: Client, make_tenant: TenantFactory, settings: Settings
) -> None:
    client = subjects_client
    app, other_app = await make_app(make_tenant, "app-a"), await make_app(make_tenant, "app-b")
    for device_id in ("d1", "d2", "d3"):
        await register_device(client, app, device_id)
    await register_device(client, other_app, "d1")

    fresh = await _retention(client, app)
    assert fresh["tenant"] == "app-a"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fresh["measured_at"])
    assert fresh["cleanup_interval_seconds"] == settings.cleanup_interval_seconds
    assert all(set(figures) == FIELDS for figures in fresh["kinds"].values())
    assert {"device_tokens", "webpush_subscriptions", "drafts"} <= set(fresh["kinds"])
    assert fresh["kinds"]["device_tokens"] == {
        "live": 3,
        "expired_awaiting_erasure": 0,
        "oldest_expired_age_seconds": 0,
        "max_ttl_seconds": 60 * DAY,
        "erased_last_24h": 0,
    }

    # Two tokens of app-a expire (a minute ago, as expire_rows sets it); cleanup is paused.
    await expire_rows(
        settings,
        "ios_device_tokens",
        "app_id = 'app-a' AND device_hash IN (:h1, :h2)",
        h1=device_hash_of(settings, "app-a", "d1"),
        h2=device_hash_of(settings, "app-a", "d2"),
    )
    waiting = (await _retention(client, app))["kinds"]["device_tokens"]
    assert waiting["live"] == 1 and waiting["expired_awaiting_erasure"] == 2
    assert 60 <= waiting["oldest_expired_age_seconds"] < 3600
    assert waiting["erased_last_24h"] == 0
    assert (await _retention(client, other_app))["kinds"]["device_tokens"]["live"] == 1

    await _one_pass(client)

    after = (await _retention(client, app))["kinds"]["device_tokens"]
    gone = {"expired_awaiting_erasure": 0, "oldest_expired_age_seconds": 0, "erased_last_24h": 2}
    assert after == {**waiting, **gone}
    others = (await _retention(client, other_app))["kinds"]["device_tokens"]
    assert (others["live"], others["erased_last_24h"]) == (1, 0)
    # The gauges show what the pass found (deployment-wide), and every kind has them.
    metrics = (await client.get("/metrics")).text
    assert _gauge(metrics, "stateless_expired_rows", "device_tokens") == 2
    age = _gauge(metrics, "stateless_oldest_expired_age_seconds", "device_tokens")
    assert age is not None and 60 <= age < 3600
    assert _gauge(metrics, "stateless_expired_rows", "drafts") == 0
    assert _gauge(metrics, "stateless_oldest_expired_age_seconds", "webpush_subscriptions") == 0

    await _one_pass(client)  # nothing left: the next pass measures 0

    metrics = (await client.get("/metrics")).text
    assert _gauge(metrics, "stateless_expired_rows", "device_tokens") == 0
    assert _gauge(metrics, "stateless_oldest_expired_age_seconds", "device_tokens") == 0


async def test_erasures_on_request_count_in_erased_last_24h(
    subjects_client: Client, make_tenant: TenantFactory
) -> None:
    client = subjects_client
    app = await make_app(make_tenant, "app-a")
    await register_device(client, app, "d1")
    await subscribe(client, app, "s1")
    await subscribe(client, app, "s2")

    r = await client.post(ERASE, headers=app.pk, json={"device_ids": ["d1"]})
    assert r.status_code == 200
    counted = (await _retention(client, app))["kinds"]
    assert counted["device_tokens"]["erased_last_24h"] == 1
    assert counted["webpush_subscriptions"]["erased_last_24h"] == 0

    r = await client.delete("/api/v1/admin/data", headers=app.sk)
    assert r.status_code == 200
    counted = (await _retention(client, app))["kinds"]
    assert counted["device_tokens"]["erased_last_24h"] == 1
    assert counted["webpush_subscriptions"]["erased_last_24h"] == 2
    assert counted["webpush_subscriptions"]["live"] == 0


async def test_counters_older_than_24_hours_stop_counting_and_cleanup_deletes_them(
    subjects_client: Client, make_tenant: TenantFactory, settings: Settings
) -> None:
    client = subjects_client
    app = await make_app(make_tenant, "app-a")
    await register_device(client, app, "d1")
    await client.post(ERASE, headers=app.pk, json={"device_ids": ["d1"]})
    assert await count_rows(settings, "erasure_counts", "app_id = 'app-a'") == 1
    # Counters hold counts per kind and hour, nothing else.
    assert await sql(settings, "SELECT kind, erased FROM erasure_counts") == [("device_tokens", 1)]

    await expire_rows(settings, "erasure_counts")
    assert (await _retention(client, app))["kinds"]["device_tokens"]["erased_last_24h"] == 0
    await _one_pass(client)

    assert await count_rows(settings, "erasure_counts") == 0


async def test_retention_needs_the_secret_key(client: Client, tenant: TenantHandle) -> None:
    assert_problem(await client.get(RETENTION, headers=tenant.pk), 403, "insufficient_scope")
    assert_problem(await client.get(RETENTION), 400, "missing_app_id")


async def test_a_process_that_stops_leading_drops_its_gauges(
    subjects_client: Client, make_tenant: TenantFactory
) -> None:
    scheduler = _scheduler(subjects_client)
    await scheduler.run_once(asyncio.Event())
    assert "stateless_expired_rows{" in (await subjects_client.get("/metrics")).text

    scheduler.on_leadership(False)

    metrics = (await subjects_client.get("/metrics")).text
    assert "stateless_expired_rows{" not in metrics
    assert "stateless_oldest_expired_age_seconds{" not in metrics
