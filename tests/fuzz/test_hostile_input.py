"""Hostile input, one regression per class (SPEC 1): each answers a 4xx problem with a stable
code, stores nothing, and never holds the event loop (a concurrent /health still answers)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from stateless.config import Settings
from tests.bots.conftest import EXECUTE, SENDGRID_KEY, execute
from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.peers.sendgrid import running_sendgrid
from tests.peers.webhook import running_webhook_receiver
from tests.support import count_rows
from tests.test_core import assert_problem

STORED_TABLES = (
    "bot_tasks",
    "bot_idempotency",
    "affiliate_aggregates",
    "affiliate_events",
    "stored_files",
    "drafts",
    "ios_device_tokens",
)


async def assert_nothing_stored(settings: Settings) -> None:
    for table in STORED_TABLES:
        assert await count_rows(settings, table) == 0, table


async def post_raw(client: Client, url: str, raw: str, headers: dict[str, str]) -> httpx.Response:
    """Send the JSON text as is (escapes such as \\ud800 reach the server unchanged)."""
    return await client.post(
        url, content=raw.encode(), headers={**headers, "Content-Type": "application/json"}
    )


async def _health_while(client: Client, hostile: Any) -> tuple[httpx.Response, float, float]:
    """Run the hostile request and, while it runs, /health; return its answer and both times."""
    started = time.perf_counter()
    hostile_task = asyncio.create_task(hostile)
    await asyncio.sleep(0)  # the hostile request is in flight first
    health_started = time.perf_counter()
    health = await client.get("/health")
    health_seconds = time.perf_counter() - health_started
    assert health.status_code == 200
    response: httpx.Response = await hostile_task
    return response, health_seconds, time.perf_counter() - started


# -- 1. numbers that reach arithmetic -------------------------------------------------------


@pytest.mark.parametrize("value", ["0E+6000000", "1E-6000000", "0E+999999999999999999", "1" * 5000])
async def test_huge_exponent_or_digits_are_422_without_holding_the_loop(
    client: Client, tenant: TenantHandle, settings: Settings, value: str
) -> None:
    code = (
        await client.post("/api/v1/affiliate/generate", headers=tenant.pk, json={"code_id": "u1"})
    ).json()["code"]
    body = {"code": code, "value": value, "currency": "USD", "event_id": "order-1"}
    hostile = client.post("/api/v1/affiliate/conversion", headers=tenant.sk, json=body)
    response, health_seconds, total = await _health_while(client, hostile)
    assert_problem(response, 422, "validation_error")
    assert health_seconds < 1.0
    assert total < 1.0
    await assert_nothing_stored(settings)


async def test_exact_values_still_count(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    code = (
        await client.post("/api/v1/affiliate/generate", headers=tenant.pk, json={"code_id": "u1"})
    ).json()["code"]
    for value in ("9.99", "1E+2", "0.10"):
        r = await client.post(
            "/api/v1/affiliate/conversion",
            headers=tenant.sk,
            json={"code": code, "value": value, "currency": "USD"},
        )
        assert r.status_code == 200, r.text
    stats = await client.get("/api/v1/affiliate/stats", headers=tenant.sk)
    assert stats.json()["totals"][0]["value_sum"] == "110.09"


# -- 3. lone UTF-16 surrogates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "raw", "key"),
    [
        ("/api/v1/drafts", '{"content": "\\ud800"}', "pk"),
        ("/api/v1/drafts", '{"content": "ok \\udfff tail"}', "sk"),
        ("/api/v1/affiliate/generate", '{"code_id": "\\ud83d"}', "pk"),
        (
            "/api/v1/ios/register-token",
            '{"token": "' + "ab" * 32 + '", "device_id": "\\ud800"}',
            "pk",
        ),
        (
            "/api/v1/storage/objects",
            '{"content_type": "text/plain", "content_length": 1, "filename": "\\ud800"}',
            "pk",
        ),
        (EXECUTE, '{"task_type": "webhook", "context": {"data": {"k": "\\ud800"}}}', "sk"),
        (EXECUTE, '{"task_type": "webhook", "context": {"data": {"\\udc00": 1}}}', "sk"),
        (EXECUTE, '{"task_type": "email", "context": {"subject": "\\ud800"}}', "sk"),
    ],
)
async def test_lone_surrogates_are_422(
    client: Client, tenant: TenantHandle, settings: Settings, url: str, raw: str, key: str
) -> None:
    r = await post_raw(client, url, raw, tenant.headers(key))
    assert_problem(r, 422, "validation_error")
    await assert_nothing_stored(settings)


async def test_paired_surrogates_are_ordinary_text(client: Client, tenant: TenantHandle) -> None:
    r = await post_raw(client, "/api/v1/drafts", '{"content": "smile \\ud83d\\ude00"}', tenant.pk)
    assert r.status_code == 201, r.text
    assert r.json()["content"] == "smile \U0001f600"


# -- 4. nesting deeper than the encoder's limit ------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [40, 300, 900])
async def test_deep_free_form_objects_are_422(
    make_client: ClientFactory, make_tenant: TenantFactory, settings: Settings, depth: int
) -> None:
    with running_webhook_receiver() as receiver:
        client = await make_client(webhook_allow_private_networks=True)
        tenant = await make_tenant("deep", webhook_url=receiver.url)
        r = await execute(client, tenant, "webhook", {"data": nested(depth)})
        assert_problem(r, 422, "validation_error")
        r = await client.post(
            "/api/v1/ios/push",
            headers=tenant.sk,
            json={"all": True, "alert": {"title": "t", "body": "b"}, "data": nested(depth)},
        )
        assert_problem(r, 422, "validation_error")
        r = await execute(
            client, tenant, "email", {"subject": "s", "dynamic_template_data": nested(depth)}
        )
        assert_problem(r, 422, "validation_error")
        assert receiver.received == []
    await assert_nothing_stored(settings)


async def test_nesting_within_the_bound_is_delivered(
    make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    with running_webhook_receiver() as receiver:
        client = await make_client(webhook_allow_private_networks=True)
        tenant = await make_tenant("deep", webhook_url=receiver.url)
        # context (1) > data (2) > 30 more levels = 32
        r = await execute(client, tenant, "webhook", {"data": nested(30)})
        assert r.status_code == 200, r.text
        assert json.loads(receiver.received[0].body)["data"] == nested(30)


@pytest.mark.parametrize("number", ["1e999", "NaN", "-Infinity", str(2**64)])
async def test_free_form_numbers_no_encoder_can_carry_are_422(
    client: Client, tenant: TenantHandle, settings: Settings, number: str
) -> None:
    raw = '{"task_type": "webhook", "context": {"data": {"n": ' + number + "}}}"
    r = await post_raw(client, EXECUTE, raw, tenant.sk)
    assert_problem(r, 422, "validation_error")
    await assert_nothing_stored(settings)


# -- 5. dates at the calendar's edges -----------------------------------------------------------


@pytest.mark.parametrize(
    "context",
    [
        {"until": "0001-01-03"},
        {"since": "0001-01-01", "until": "0001-01-02"},
        {"since": "1969-12-31"},
    ],
)
async def test_report_dates_outside_1970_9999_are_422(
    client: Client, tenant: TenantHandle, settings: Settings, context: dict[str, str]
) -> None:
    r = await execute(client, tenant, "report_generation", context)
    assert_problem(r, 422, "validation_error")
    await assert_nothing_stored(settings)


@pytest.mark.parametrize("params", [{"until": "0001-01-01"}, {"since": "1969-12-31"}])
async def test_stats_dates_outside_1970_9999_are_422(
    client: Client, tenant: TenantHandle, params: dict[str, str]
) -> None:
    r = await client.get("/api/v1/affiliate/stats", params=params, headers=tenant.sk)
    assert_problem(r, 422, "validation_error")


async def test_the_last_representable_day_is_fine(client: Client, tenant: TenantHandle) -> None:
    r = await client.get(
        "/api/v1/affiliate/stats", params={"until": "9999-12-31"}, headers=tenant.sk
    )
    assert r.status_code == 200, r.text


# -- 8. email parts SendGrid would refuse --------------------------------------------------------


async def test_empty_text_part_is_dropped_not_sent(
    make_client: ClientFactory, make_tenant: TenantFactory, settings: Settings
) -> None:
    with running_sendgrid(SENDGRID_KEY) as peer:
        client = await make_client(
            sendgrid_api_key=SENDGRID_KEY, sendgrid_api_base_url=peer.base_url
        )
        tenant = await make_tenant("mail")
        context = {"to": "ann@example.com", "subject": "Hi", "text": "", "html": "<p>Hi</p>"}
        r = await execute(client, tenant, "email", context)
        assert r.status_code == 200, r.text
        assert peer.requests[0]["content"] == [{"type": "text/html", "value": "<p>Hi</p>"}]

        for empty in ({"text": "", "html": ""}, {"text": ""}, {"html": ""}):
            context = {"to": "ann@example.com", "subject": "Hi", **empty}
            r = await execute(client, tenant, "email", context)
            assert_problem(r, 422, "validation_error")
        campaign = {"subject": "Hi", "text": "", "recipients": [{"to": "ann@example.com"}]}
        assert_problem(
            await execute(client, tenant, "email_campaign", campaign), 422, "validation_error"
        )
        assert len(peer.requests) == 1
    assert await count_rows(settings, "bot_tasks") == 1  # only the one that was sent


# -- 9. APNs background pushes carry only content-available --------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{"badge": 1}, {"badge": 0}, {"sound": "ping.caf"}, {"alert": {"title": "t", "body": "b"}}],
)
async def test_background_push_refuses_other_aps_keys(
    client: Client, tenant: TenantHandle, settings: Settings, extra: dict[str, Any]
) -> None:
    body = {"all": True, "push_type": "background", **extra}
    assert_problem(
        await client.post("/api/v1/ios/push", headers=tenant.sk, json=body), 422, "validation_error"
    )
    assert_problem(await execute(client, tenant, "push", body), 422, "validation_error")
    await assert_nothing_stored(settings)


# -- values we send on as APNs header values (found by `make fuzz`: a 500 on /ios/push) ---------


@pytest.mark.parametrize("value", ["\u00e9", "a\u0011b", " lead", "\U0001f600"])
async def test_header_bound_values_must_be_printable_ascii(
    client: Client, tenant: TenantHandle, settings: Settings, value: str
) -> None:
    body = {"device_ids": ["d"], "alert": {"title": "t", "body": "b"}, "collapse_id": value}
    r = await client.post("/api/v1/ios/push", headers=tenant.sk, json=body)
    assert_problem(r, 422, "validation_error")
    token = {"token": "ab" * 32, "device_id": "d", "topic": "com.example" + value}
    r = await client.post("/api/v1/ios/register-token", headers=tenant.pk, json=token)
    assert_problem(r, 422, "validation_error")
    await assert_nothing_stored(settings)
