"""data_export and report_generation: files in storage whose URLs expire with them."""

from __future__ import annotations

import csv
import io
import json
from urllib.parse import urlsplit

from stateless.config import Settings
from tests.bots.conftest import execute, wait_for_task
from tests.conftest import Client, ClientFactory, TenantHandle
from tests.privacy import assert_not_stored
from tests.support import expire_rows
from tests.test_core import assert_problem


async def _download(client: Client, url: str) -> tuple[int, bytes, str]:
    parts = urlsplit(url)
    assert parts.netloc == "testserver"
    r = await client.get(parts.path + (f"?{parts.query}" if parts.query else ""))
    return r.status_code, r.content, r.headers.get("content-type", "")


async def test_data_export_holds_live_data_in_stored_form(
    client: Client, tenant: TenantHandle, other_tenant: TenantHandle, settings: Settings
) -> None:
    secret_text = "my diary entry 0xC0FFEE"
    draft = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": secret_text})
    assert draft.status_code == 201
    await client.post("/api/v1/drafts", headers=other_tenant.pk, json={"content": "other app"})
    await execute(client, tenant, "email", {"to": "a@example.com", "subject": "x"})

    r = await execute(client, tenant, "data_export", {}, ttl_seconds=3600)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    # the email task, and this export's own record (running while it exports)
    assert result["counts"]["drafts"] == 1 and result["counts"]["bot_tasks"] == 2
    status, body, content_type = await _download(client, result["download_url"])
    assert status == 200 and content_type.startswith("application/json")
    document = json.loads(body)
    assert document["tenant"] == tenant.app_id
    [exported_draft] = document["kinds"]["drafts"]
    assert exported_draft["draft_id"] == draft.json()["id"]
    assert exported_draft["content_sealed"] == "[sealed]"
    assert secret_text.encode() not in body and b"other app" not in body
    assert len(body) == result["size_bytes"]

    # the object (and its URL) expires with the object's TTL
    await expire_rows(settings, "stored_files")
    status, _, _ = await _download(client, result["download_url"])
    assert status in (404, 410)
    await assert_not_stored(settings, [secret_text, "a@example.com"])


async def test_export_of_selected_kinds_and_unknown_kinds(
    client: Client, tenant: TenantHandle
) -> None:
    r = await execute(client, tenant, "data_export", {"kinds": ["drafts"]})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["counts"] == {"drafts": 0}
    r = await execute(client, tenant, "data_export", {"kinds": ["passwords"]})
    assert_problem(r, 422, "unknown_kind")
    r = await execute(client, tenant, "data_export", {"ttl_seconds": 30 * 86400})
    assert_problem(r, 422, "ttl_out_of_range")


async def test_report_counts_tasks_and_conversions_as_csv(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    client = await make_client(run_background_jobs=True)
    for i in range(3):
        await execute(client, tenant, "email", {"to": f"u{i}@example.com", "subject": "x"})
    await execute(client, tenant, "email", {"subject": "no recipient"})  # 422: no record
    code = (
        await client.post("/api/v1/affiliate/generate", headers=tenant.pk, json={"code_id": "c1"})
    ).json()["code"]
    for _ in range(2):
        conv = await client.post(
            "/api/v1/affiliate/conversion",
            headers=tenant.sk,
            json={"code": code, "value": "4.99", "currency": "EUR"},
        )
        assert conv.status_code == 200, conv.text

    queued = await execute(client, tenant, "report_generation", {}, mode="async")
    assert queued.status_code == 202
    task = await wait_for_task(client, tenant, queued.json()["task_id"])
    assert task["status"] == "success", task
    result = task["result"]
    status, body, content_type = await _download(client, result["download_url"])
    assert status == 200 and content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    by_metric = {(r["metric"], r["dimension"]): r for r in rows}
    assert by_metric[("bot_tasks", "email/success")]["count"] == "3"
    conversions = by_metric[("conversions", "conversion/EUR")]
    assert conversions["count"] == "2" and conversions["value_sum_minor"] == "998"
    assert by_metric[("bot_tasks", "report_generation/running")]["count"] == "1"  # itself
    assert result["totals"]["bot_tasks"] == 4 and result["totals"]["conversions"] == 2
    assert b"example.com" not in body


async def test_report_range_is_validated(client: Client, tenant: TenantHandle) -> None:
    r = await execute(
        client, tenant, "report_generation", {"since": "2026-02-01", "until": "2026-01-01"}
    )
    assert_problem(r, 422, "validation_error")
    r = await execute(
        client, tenant, "report_generation", {"since": "2024-01-01", "until": "2026-01-01"}
    )
    assert_problem(r, 422, "range_too_long")
