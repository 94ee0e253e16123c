"""Postgres: concurrent conversions of one aggregate are all counted, with an exact sum, and a
repeated event_id is counted exactly once, even across two app instances (two pools)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import IntegrityError

from stateless.config import Settings
from tests.conftest import Client, ClientFactory, TenantHandle
from tests.support import sql

BASE = "/api/v1/affiliate"


async def _code(client: Client, tenant: TenantHandle, code_id: str) -> str:
    r = await client.post(f"{BASE}/generate", headers=tenant.pk, json={"code_id": code_id})
    assert r.status_code == 200, r.text
    code: str = r.json()["code"]
    return code


async def test_fifty_concurrent_conversions_count_fifty_with_exact_sum(
    client: Client, make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    second_replica = await make_client()
    code = await _code(client, tenant, "popular")
    body = {"code": code, "event": "purchase", "value": "19.99", "currency": "USD"}
    responses = await asyncio.gather(
        *(
            (client if i % 2 else second_replica).post(
                f"{BASE}/conversion", headers=tenant.sk, json=body
            )
            for i in range(50)
        )
    )
    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"recorded"}
    rows = await sql(
        settings,
        "SELECT conversions, value_sum_minor FROM affiliate_aggregates WHERE app_id = :a",
        a=tenant.app_id,
    )
    assert [(int(c), int(s)) for c, s in rows] == [(50, 99950)]
    stats = await client.get(f"{BASE}/stats", headers=tenant.sk, params={"code": code})
    assert stats.json()["totals"] == [
        {"event": "purchase", "currency": "USD", "count": 50, "value_sum": "999.50"}
    ]


async def test_concurrent_repeats_of_one_event_id_count_once(
    client: Client, make_client: ClientFactory, tenant: TenantHandle, settings: Settings
) -> None:
    second_replica = await make_client()
    code = await _code(client, tenant, "retrying-client")
    body = {"code": code, "value": "5", "currency": "JPY", "event_id": "order-1"}
    responses = await asyncio.gather(
        *(
            (client if i % 2 else second_replica).post(
                f"{BASE}/conversion", headers=tenant.sk, json=body
            )
            for i in range(20)
        )
    )
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["duplicate"] * 19 + ["recorded"]
    rows = await sql(settings, "SELECT conversions, value_sum_minor FROM affiliate_aggregates")
    assert [(int(c), int(s)) for c, s in rows] == [(1, 5)]
    marks = await sql(settings, "SELECT count(*) FROM affiliate_events")
    assert marks[0][0] == 1


@pytest.mark.parametrize("table", ["affiliate_aggregates", "affiliate_events"])
async def test_database_refuses_affiliate_rows_outliving_the_cap(
    settings: Settings, table: str
) -> None:
    columns = {
        "affiliate_aggregates": (
            "code, day, event, currency, conversions, value_sum_minor",
            "'0000000000000000', current_date, 'conversion', '', 1, 0",
        ),
        "affiliate_events": ("event_hash", "'h'"),
    }[table]
    with pytest.raises(IntegrityError, match=f"ck_{table}_max_ttl"):
        await sql(
            settings,
            f"INSERT INTO {table} (app_id, {columns[0]}, created_at, expires_at) "
            f"VALUES ('t', {columns[1]}, now(), now() + interval '91 days')",
        )
