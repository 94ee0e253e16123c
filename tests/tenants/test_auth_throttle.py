"""SPEC 2: repeated failed authentications from one address get 429 problems with Retry-After,
per app id and overall; a valid key is never locked out by someone else's failures."""

from __future__ import annotations

import pytest

from stateless.config import Settings
from tests.conftest import ClientFactory, TenantFactory
from tests.services import Services
from tests.support import count_rows
from tests.test_core import assert_problem

DRAFTS = "/api/v1/drafts"
LIMITS = {"auth_failure_limit_per_app": "5/minute", "auth_failure_limit": "8/minute"}


def wrong(app_id: str) -> dict[str, str]:
    return {"X-App-ID": app_id, "Authorization": "Bearer sk_wrong_0123456789abcdef0123456789"}


@pytest.mark.parametrize("storage", ["memory", "redis"])
async def test_failures_per_app_are_throttled_and_valid_keys_keep_working(
    make_client: ClientFactory,
    make_tenant: TenantFactory,
    services: Services,
    settings: Settings,
    storage: str,
) -> None:
    redis = {"redis_url": services.redis_url} if storage == "redis" else {}
    client = await make_client(**LIMITS, **redis)
    tenant = await make_tenant("victim")
    for _ in range(5):
        assert_problem(
            await client.post(DRAFTS, headers=wrong("victim"), json={}), 401, "unauthorized"
        )
    r = await client.post(DRAFTS, headers=wrong("victim"), json={"content": "x"})
    body = assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert "failed authentication" in body["detail"]
    # the same address, with the valid key: not locked out
    ok = await client.post(DRAFTS, headers=tenant.pk, json={"content": "mine"})
    assert ok.status_code == 201, ok.text
    assert (await client.get(DRAFTS, headers=tenant.sk)).status_code == 200
    assert await count_rows(settings, "drafts") == 1


async def test_unknown_apps_count_alike_and_overall_limit_applies(
    make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    client = await make_client(**LIMITS)
    tenant = await make_tenant("victim")
    statuses = []
    for i in range(8):  # spread over app ids: per app never reached, overall (8) is
        r = await client.get(DRAFTS, headers=wrong(f"probe-{i % 4}"))
        statuses.append(r.status_code)
    assert statuses == [401] * 8
    r = await client.get(DRAFTS, headers=wrong("probe-9"))
    assert_problem(r, 429, "rate_limited")
    assert r.headers["retry-after"]
    # a known app and an unknown one answer the same once throttled (no enumeration)
    known = await client.get(DRAFTS, headers=wrong("victim"))
    unknown = await client.get(DRAFTS, headers=wrong("nobody"))
    assert known.status_code == unknown.status_code == 429
    assert known.json()["code"] == unknown.json()["code"]
    assert (await client.get(DRAFTS, headers=tenant.sk)).status_code == 200


async def test_missing_keys_count_as_failures(make_client: ClientFactory) -> None:
    client = await make_client(**LIMITS)
    statuses = [
        (await client.get(DRAFTS, headers={"X-App-ID": "someone"})).status_code for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
