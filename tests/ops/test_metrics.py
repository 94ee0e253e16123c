"""/metrics exposes each named series once traffic has touched it (SQLite and Postgres)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Client, ClientFactory, TenantHandle


async def scrape(
    client: Client, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_requests_by_route_template_and_status_class(
    client: Client, tenant: TenantHandle
) -> None:
    created = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": "hi"})
    assert created.status_code == 201
    draft_id = created.json()["id"]
    assert (await client.get(f"/api/v1/drafts/{draft_id}", headers=tenant.pk)).status_code == 200
    assert (await client.get("/api/v1/drafts/nope", headers=tenant.pk)).status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404
    samples = await scrape(client)
    requests = "stateless_http_requests_total"
    template = "/api/v1/drafts/{draft_id}"
    assert value(samples, requests, method="POST", route="/api/v1/drafts", status_class="2xx") == 1
    assert value(samples, requests, method="GET", route=template, status_class="2xx") == 1
    assert value(samples, requests, method="GET", route=template, status_class="4xx") == 1
    assert value(samples, requests, method="GET", route="unmatched", status_class="4xx") == 1
    # the concrete id never becomes a label (bounded cardinality, nothing identifying)
    assert not any(draft_id in str(labels) for _name, labels in samples)
    assert value(samples, "stateless_http_request_duration_seconds_count", route=template) == 2


async def test_rate_limit_rejections_are_counted(client: Client, tenant: TenantHandle) -> None:
    headers = {"X-App-ID": tenant.app_id}
    statuses = [(await client.get("/health", headers=headers)).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    samples = await scrape(client)
    assert value(samples, "stateless_rate_limit_rejections_total", route="health") == 1
    assert (
        value(
            samples,
            "stateless_http_requests_total",
            method="GET",
            route="/health",
            status_class="4xx",
        )
        == 1
    )


async def test_redis_fail_open_is_counted(make_client: ClientFactory) -> None:
    client = await make_client(redis_url="redis://127.0.0.1:1/0")
    for _ in range(3):
        response = await client.get("/health")
        assert response.status_code == 200  # served although Redis is down
    assert (await client.get("/health/ready")).status_code == 503
    samples = await scrape(client)
    assert value(samples, "stateless_redis_fail_open_total") >= 3


async def test_cleanup_series_from_admin_and_from_the_scheduler(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    client = await make_client()
    short = await client.post(
        "/api/v1/drafts", headers=tenant.pk, json={"content": "soon gone", "ttl_seconds": 1}
    )
    assert short.status_code == 201
    await asyncio.sleep(1.2)
    cleaned = await client.post("/api/v1/admin/cleanup", headers=tenant.sk)
    assert cleaned.status_code == 200 and cleaned.json()["deleted"].get("drafts") == 1
    samples = await scrape(client)
    assert value(samples, "stateless_cleanup_deleted_rows_total", kind="drafts") == 1
    assert value(samples, "stateless_cleanup_run_duration_seconds_count") >= 1

    background = await make_client(run_background_jobs=True, cleanup_interval_seconds=0.1)
    for _ in range(100):
        samples = await scrape(background)
        if value(samples, "stateless_cleanup_runs_total", outcome="success") >= 1:
            break
        await asyncio.sleep(0.05)
    assert value(samples, "stateless_cleanup_runs_total", outcome="success") >= 1
    assert value(samples, "stateless_cleanup_is_leader") == 1
    assert value(samples, "stateless_cleanup_last_success_timestamp_seconds") > 1.7e9


async def test_task_and_push_series_are_exposed(client: Client) -> None:
    text = (await client.get("/metrics")).text
    for series in ("stateless_bot_tasks_total", "stateless_push_notifications_total"):
        assert f"# TYPE {series} counter" in text


@pytest.mark.parametrize("presented", [None, "Bearer wrong-token", "Basic bWV0cmljcw=="])
async def test_metrics_token_is_required_when_set(
    make_client: ClientFactory, presented: str | None
) -> None:
    token = "metrics-token-for-the-scraper-0123456789"
    client = await make_client(metrics_token=token)
    headers = {"Authorization": presented} if presented else {}
    refused = await client.get("/metrics", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert token not in refused.text
    samples = await scrape(client, Authorization=f"Bearer {token}")
    assert samples
