"""Affiliate through HTTP on both databases: codes, conversions, exact sums, de-duplication,
validation problems, stats windows in UTC days, expiry and cleanup, privacy at rest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from stateless.affiliate.wiring import affiliate_service
from stateless.config import Settings
from stateless.kit.data.db import session_scope
from stateless.tenants.schemas import TenantConfig, TenantContext, VerifiedAppId
from tests.conftest import Client, TenantHandle
from tests.privacy import assert_not_stored
from tests.support import count_rows, expire_rows, sql
from tests.test_core import assert_problem

BASE = "/api/v1/affiliate"
GENERATE, CONVERSION, STATS = f"{BASE}/generate", f"{BASE}/conversion", f"{BASE}/stats"


async def generate(client: Client, tenant: TenantHandle, code_id: str, key: str = "pk") -> str:
    r = await client.post(GENERATE, headers=tenant.headers(key), json={"code_id": code_id})
    assert r.status_code == 200, r.text
    assert r.json()["tenant"] == tenant.app_id
    code: str = r.json()["code"]
    return code


async def convert(client: Client, tenant: TenantHandle, **body: Any) -> Any:
    return await client.post(CONVERSION, headers=tenant.sk, json=body)


async def stats(client: Client, tenant: TenantHandle, **params: str) -> dict[str, Any]:
    r = await client.get(STATS, headers=tenant.sk, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def today() -> date:
    return datetime.now(UTC).date()


def totals(body: dict[str, Any]) -> dict[tuple[str, str | None], tuple[int, str | None]]:
    return {(t["event"], t["currency"]): (t["count"], t["value_sum"]) for t in body["totals"]}


# -- generate ------------------------------------------------------------------------------------


async def test_generate_is_deterministic_grouped_and_stores_nothing(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    first = await generate(client, tenant, "referrer-1")
    assert first == await generate(client, tenant, "referrer-1")
    assert first == await generate(client, tenant, "referrer-1", key="sk")
    assert len(first) == 19 and [len(p) for p in first.split("-")] == [4, 4, 4, 4]
    assert first == first.upper() and not set(first) & set("ILOU")
    assert first != await generate(client, tenant, "referrer-2")
    assert await count_rows(settings, "affiliate_aggregates") == 0
    assert await count_rows(settings, "affiliate_events") == 0


async def test_generate_accepts_the_legacy_session_id_alias(
    client: Client, tenant: TenantHandle
) -> None:
    code = await generate(client, tenant, "legacy-user")
    r = await client.post(GENERATE, headers=tenant.pk, json={"session_id": "legacy-user"})
    assert r.status_code == 200 and r.json()["code"] == code
    # code_id wins when both are sent
    r = await client.post(
        GENERATE, headers=tenant.pk, json={"code_id": "legacy-user", "session_id": "other"}
    )
    assert r.json()["code"] == code
    # and the alias works for the cross-check of /conversion too
    r = await convert(client, tenant, code=code, session_id="legacy-user")
    assert r.json() == {"status": "recorded"}


@pytest.mark.parametrize("body", [{}, {"code_id": ""}, {"code_id": "x" * 129}, {"code_id": 5}])
async def test_generate_validates_code_id(
    client: Client, tenant: TenantHandle, body: dict[str, Any]
) -> None:
    assert_problem(
        await client.post(GENERATE, headers=tenant.pk, json=body), 422, "validation_error"
    )


async def test_generate_accepts_128_characters_and_needs_a_key(
    client: Client, tenant: TenantHandle
) -> None:
    await generate(client, tenant, "é" * 128)
    r = await client.post(GENERATE, headers={"X-App-ID": tenant.app_id}, json={"code_id": "a"})
    assert_problem(r, 401, "unauthorized")


# -- conversions ---------------------------------------------------------------------------------


async def test_codes_verify_for_their_tenant_only(
    client: Client, tenant: TenantHandle, other_tenant: TenantHandle
) -> None:
    mine = await generate(client, tenant, "shared-id")
    theirs = await generate(client, other_tenant, "shared-id")
    assert mine != theirs
    assert (await convert(client, tenant, code=mine)).json() == {"status": "recorded"}
    assert_problem(await convert(client, tenant, code=theirs), 400, "invalid_code")
    assert_problem(await convert(client, other_tenant, code=mine), 400, "invalid_code")
    assert (await convert(client, other_tenant, code=theirs)).json() == {"status": "recorded"}
    # the other tenant's stats see only its own conversion; its code is invalid here
    assert totals(await stats(client, other_tenant)) == {("conversion", None): (1, None)}
    assert_problem(
        await client.get(STATS, headers=tenant.sk, params={"code": theirs}), 400, "invalid_code"
    )


async def test_forged_and_malformed_codes_are_invalid_code(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    code = await generate(client, tenant, "victim")
    flipped = code[:-1] + ("0" if code[-1] != "0" else "1")
    for forged in (flipped, "ABCD-EFGH-JKMN-PQRS", "0000000000000000", "not a code", "U" * 16):
        body = assert_problem(await convert(client, tenant, code=forged), 400, "invalid_code")
        assert forged not in body["detail"]
    # a code that is not the code of the given code_id is refused the same way
    r = await convert(client, tenant, code=code, code_id="someone-else")
    assert_problem(r, 400, "invalid_code")
    assert (await convert(client, tenant, code=code, code_id="victim")).json()["status"] == (
        "recorded"
    )
    assert await count_rows(settings, "affiliate_aggregates") == 1


async def test_conversion_and_stats_need_the_secret_key(
    client: Client, tenant: TenantHandle
) -> None:
    code = await generate(client, tenant, "scoped")
    r = await client.post(CONVERSION, headers=tenant.pk, json={"code": code})
    assert_problem(r, 403, "insufficient_scope")
    assert_problem(await client.get(STATS, headers=tenant.pk), 403, "insufficient_scope")


async def test_sums_are_exact_per_currency_with_minor_units(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    code = await generate(client, tenant, "big-spender")
    sent: list[dict[str, Any]] = [
        *({"value": "0.10", "currency": "USD"} for _ in range(3)),  # 0.30 exactly, never 0.3000004
        {"value": 0.1, "currency": "usd"},  # JSON number and lower case accepted
        {"value": "1000", "currency": "JPY"},
        {"value": 250, "currency": "JPY"},
        {"value": "1.005", "currency": "KWD"},
        {"value": "2.5", "currency": "KWD"},
        {"value": "9.990", "currency": "EUR"},  # trailing zeros are not extra places
        {"value": "0", "currency": "EUR"},
        {},
        {},
    ]
    for body in sent:
        r = await convert(client, tenant, code=code, event="purchase", **body)
        assert r.json() == {"status": "recorded"}, (body, r.text)
    await convert(client, tenant, code=code, event="signup")
    result = await stats(client, tenant, code=code.replace("-", "").lower())
    assert result["code"] == code and result["tenant"] == tenant.app_id
    assert result["until"] == today().isoformat()
    assert result["since"] == (today() - timedelta(days=89)).isoformat()
    assert totals(result) == {
        ("purchase", None): (2, None),
        ("purchase", "EUR"): (2, "9.99"),
        ("purchase", "JPY"): (2, "1250"),
        ("purchase", "KWD"): (2, "3.505"),
        ("purchase", "USD"): (4, "0.40"),
        ("signup", None): (1, None),
    }
    assert {(d["day"], d["event"], d["currency"]) for d in result["days"]} == {
        (today().isoformat(), e, c) for e, c in totals(result)
    }
    # stored as integer minor units, the code in its canonical form, "" for no currency
    rows = await sql(
        settings,
        "SELECT code, currency, conversions, value_sum_minor FROM affiliate_aggregates "
        "WHERE event = 'purchase' ORDER BY currency",
    )
    canonical = code.replace("-", "")
    assert [(r[0], r[1], int(r[2]), int(r[3])) for r in rows] == [
        (canonical, "", 2, 0),
        (canonical, "EUR", 2, 999),
        (canonical, "JPY", 2, 1250),
        (canonical, "KWD", 2, 3505),
        (canonical, "USD", 4, 40),
    ]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"value": "1.00", "currency": "ABC"}, "invalid_currency", "currency"),
        ({"value": "1.00", "currency": "BGN"}, "invalid_currency", "currency"),  # withdrawn
        ({"value": "1.00", "currency": "XXX"}, "invalid_currency", "currency"),
        ({"value": "-0.01", "currency": "USD"}, "negative_value", "value"),
        ({"value": "9.99"}, "currency_required", "currency"),
        ({"currency": "USD"}, "value_required", "value"),
        ({"value": "1.5", "currency": "JPY"}, "too_many_decimals", "value"),
        ({"value": "9.999", "currency": "USD"}, "too_many_decimals", "value"),
        ({"value": "1.2345", "currency": "KWD"}, "too_many_decimals", "value"),
        ({"value": "1e13", "currency": "USD"}, "value_too_large", "value"),
        ({"event": "has space"}, "validation_error", "event"),
        ({"event": "x" * 65}, "validation_error", "event"),
        ({"event_id": ""}, "validation_error", "event_id"),
        ({"value": "NaN", "currency": "USD"}, "validation_error", "value"),
        ({"value": "lots", "currency": "USD"}, "validation_error", "value"),
    ],
)
async def test_bad_amounts_and_fields_are_422_problems(
    client: Client,
    tenant: TenantHandle,
    settings: Settings,
    body: dict[str, Any],
    code: str,
    field: str,
) -> None:
    referral = await generate(client, tenant, "validator")
    problem = assert_problem(await convert(client, tenant, code=referral, **body), 422, code)
    assert problem["errors"][0]["loc"][:2] == ["body", field]
    assert await count_rows(settings, "affiliate_aggregates") == 0


async def test_duplicate_event_id_is_counted_once(
    client: Client, tenant: TenantHandle, other_tenant: TenantHandle, settings: Settings
) -> None:
    code = await generate(client, tenant, "dedupe")
    first = await convert(client, tenant, code=code, value="4.99", currency="USD", event_id="o-1")
    assert first.json() == {"status": "recorded"}
    for body in (
        {"value": "4.99", "currency": "USD"},
        {"value": "100", "currency": "JPY", "event": "purchase"},  # same id, other fields: still
    ):
        again = await convert(client, tenant, code=code, event_id="o-1", **body)
        assert again.json() == {"status": "duplicate"}
    assert (await convert(client, tenant, code=code, event_id="o-2")).json()["status"] == (
        "recorded"
    )
    assert totals(await stats(client, tenant)) == {
        ("conversion", "USD"): (1, "4.99"),
        ("conversion", None): (1, None),
    }
    # event ids are per tenant
    theirs = await generate(client, other_tenant, "dedupe")
    r = await convert(client, other_tenant, code=theirs, event_id="o-1")
    assert r.json() == {"status": "recorded"}
    assert await count_rows(settings, "affiliate_events") == 3
    # an invalid code consumes no event id
    assert_problem(
        await convert(client, tenant, code="0" * 16, event_id="o-3"), 400, "invalid_code"
    )
    assert (await convert(client, tenant, code=code, event_id="o-3")).json()["status"] == "recorded"


# -- stats windows -------------------------------------------------------------------------------


async def test_stats_validates_its_window_and_code(client: Client, tenant: TenantHandle) -> None:
    async def get(**params: str) -> Any:
        return await client.get(STATS, headers=tenant.sk, params=params)

    body = assert_problem(
        await get(since="2026-03-02", until="2026-03-01"), 422, "invalid_date_range"
    )
    assert body["errors"][0]["loc"] == ["query", "until"]
    assert_problem(await get(since="2025-01-01", until="2026-01-02"), 422, "date_range_too_long")
    assert (await get(since="2025-01-01", until="2026-01-01")).status_code == 200  # 366 days
    assert_problem(await get(since="yesterday"), 422, "validation_error")
    assert_problem(await get(until="2026-02-30"), 422, "validation_error")
    assert_problem(await get(code="ZZZZ-ZZZZ-ZZZZ-ZZZZ"), 400, "invalid_code")
    everything = await get(code="")
    assert everything.status_code == 200 and everything.json()["code"] is None
    empty = (await get(since="2026-01-01", until="2026-01-01")).json()
    assert empty["days"] == [] and empty["totals"] == [] and empty["truncated"] is False


def service_at(client: Client, tenant: TenantHandle, clock: Callable[[], datetime]) -> Any:
    """Run AffiliateService with an injected clock, the way other parts call it."""
    container = client.app.state.container
    context = TenantContext(
        app_id=VerifiedAppId(tenant.app_id),
        scope="secret",
        key_id="test",
        config=TenantConfig(),
        secrets_sealed=None,
    )

    async def record(code: str, **kwargs: Any) -> str:
        async with session_scope(container.sessionmaker) as session:
            service = affiliate_service(container, session, context, clock=clock)
            return await service.record_conversion(code, **kwargs)

    return record


async def test_days_are_utc_days_with_inclusive_bounds(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    code = await generate(client, tenant, "night-owl")
    day = today() - timedelta(days=3)
    midnight = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    last_instant = midnight - timedelta(microseconds=1)
    for moment, value in ((last_instant, "1.00"), (midnight, "2.00"), (midnight, "3.00")):
        record = service_at(client, tenant, lambda m=moment: m)
        assert await record(code, value=Decimal(value), currency="USD") == "recorded"
    # 23:59 at UTC+14 on the next day is still the earlier UTC day
    tz_plus_14 = last_instant.astimezone(timezone(timedelta(hours=14)))
    record = service_at(client, tenant, lambda: tz_plus_14)
    assert await record(code, value=Decimal("10.00"), currency="USD") == "recorded"

    both = await stats(
        client, tenant, since=day.isoformat(), until=(day + timedelta(days=1)).isoformat()
    )
    assert [(d["day"], d["count"], d["value_sum"]) for d in both["days"]] == [
        (day.isoformat(), 2, "11.00"),
        ((day + timedelta(days=1)).isoformat(), 2, "5.00"),
    ]
    assert totals(both) == {("conversion", "USD"): (4, "16.00")}
    only_first = await stats(client, tenant, since=day.isoformat(), until=day.isoformat())
    assert totals(only_first) == {("conversion", "USD"): (2, "11.00")}
    only_second = await stats(client, tenant, since=(day + timedelta(days=1)).isoformat())
    assert totals(only_second) == {("conversion", "USD"): (2, "5.00")}
    # each aggregate expires 90 days after the start of its UTC day, whatever the hour
    rows = await sql(settings, "SELECT day, expires_at FROM affiliate_aggregates ORDER BY day")
    assert len(rows) == 2
    for stored_day, expires_at in rows:
        stored = stored_day if isinstance(stored_day, date) else date.fromisoformat(stored_day)
        expected = datetime.combine(stored, time.min, tzinfo=UTC) + timedelta(days=90)
        if isinstance(expires_at, str):
            expires_at = datetime.fromisoformat(expires_at).replace(tzinfo=UTC)
        assert expires_at == expected


async def test_stats_without_code_sums_all_codes_per_day(
    client: Client, tenant: TenantHandle
) -> None:
    a, b = await generate(client, tenant, "a"), await generate(client, tenant, "b")
    for code in (a, b, b):
        await convert(client, tenant, code=code, value="1.25", currency="GBP", event="purchase")
    everything = await stats(client, tenant)
    assert everything["code"] is None
    assert [(d["count"], d["value_sum"]) for d in everything["days"]] == [(3, "3.75")]
    assert totals(await stats(client, tenant, code=b)) == {("purchase", "GBP"): (2, "2.50")}


# -- expiry --------------------------------------------------------------------------------------


async def test_expired_aggregates_are_invisible_then_deleted_by_cleanup(
    client: Client, tenant: TenantHandle, other_tenant: TenantHandle, settings: Settings
) -> None:
    code = await generate(client, tenant, "fading")
    theirs = await generate(client, other_tenant, "fading")
    for _ in range(2):
        await convert(client, tenant, code=code, value="5.00", currency="USD", event_id=None)
    await convert(client, tenant, code=code, event_id="evt-1")
    await convert(client, other_tenant, code=theirs)
    admin = (await client.get("/api/v1/admin/stats", headers=tenant.sk)).json()["items"]
    assert admin["affiliate_aggregates"] == 2 and admin["affiliate_events"] == 1

    await expire_rows(settings, "affiliate_aggregates", "app_id = :a", a=tenant.app_id)
    await expire_rows(settings, "affiliate_events", "app_id = :a", a=tenant.app_id)
    gone = await stats(client, tenant)
    assert gone["days"] == [] and gone["totals"] == []
    admin = (await client.get("/api/v1/admin/stats", headers=tenant.sk)).json()["items"]
    assert admin["affiliate_aggregates"] == 0 and admin["affiliate_events"] == 0

    # an expired mark no longer de-duplicates; an expired aggregate restarts instead of adding
    assert (await convert(client, tenant, code=code, event_id="evt-1")).json()["status"] == (
        "recorded"
    )
    await convert(client, tenant, code=code, value="1.00", currency="USD")
    assert totals(await stats(client, tenant)) == {
        ("conversion", None): (1, None),
        ("conversion", "USD"): (1, "1.00"),
    }

    await expire_rows(settings, "affiliate_aggregates", "app_id = :a", a=tenant.app_id)
    await expire_rows(settings, "affiliate_events", "app_id = :a", a=tenant.app_id)
    r = await client.post("/api/v1/admin/cleanup", headers=tenant.sk)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"]["affiliate_aggregates"] == 2
    assert r.json()["deleted"]["affiliate_events"] == 1
    assert await count_rows(settings, "affiliate_aggregates", "app_id = :a", a=tenant.app_id) == 0
    assert await count_rows(settings, "affiliate_events", "app_id = :a", a=tenant.app_id) == 0
    # the other tenant's live aggregate is untouched
    assert (
        await count_rows(settings, "affiliate_aggregates", "app_id = :a", a=other_tenant.app_id)
        == 1
    )
    assert totals(await stats(client, other_tenant)) == {("conversion", None): (1, None)}


async def test_erase_data_removes_affiliate_rows(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    code = await generate(client, tenant, "erase-me")
    await convert(client, tenant, code=code, event_id="e-1", value="1", currency="CHF")
    r = await client.delete("/api/v1/admin/data", headers=tenant.sk)
    assert r.status_code == 200
    assert await count_rows(settings, "affiliate_aggregates") == 0
    assert await count_rows(settings, "affiliate_events") == 0


# -- privacy -------------------------------------------------------------------------------------


async def test_code_ids_and_event_ids_are_never_stored_or_logged(
    client: Client, tenant: TenantHandle, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code_id = "referrer-7f3a9c-alice"
    legacy_id = "session-5d2e81-bob"
    event_ids = ["order-2026-11-25-000123", "apple-txn-200000512345678"]
    code = await generate(client, tenant, code_id)
    legacy = (
        await client.post(GENERATE, headers=tenant.pk, json={"session_id": legacy_id})
    ).json()["code"]
    for event_id in event_ids:
        r = await convert(
            client,
            tenant,
            code=code,
            code_id=code_id,
            event_id=event_id,
            value="3.50",
            currency="EUR",
        )
        assert r.json()["status"] == "recorded"
    await convert(client, tenant, code=legacy, session_id=legacy_id, event_id=event_ids[0])
    assert_problem(await convert(client, tenant, code=code, code_id=legacy_id), 400, "invalid_code")
    assert totals(await stats(client, tenant, code=code))[("conversion", "EUR")] == (2, "7.00")
    dump = await assert_not_stored(
        settings, [code_id, legacy_id, *event_ids], logs=capsys.readouterr().out
    )
    assert code.replace("-", "") in dump  # the code itself (a MAC) is what aggregates keep


async def test_huge_sums_stay_exact_or_are_refused_never_floats(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    code = await generate(client, tenant, "whale")
    await convert(client, tenant, code=code, value="0.01", currency="USD")
    near_limit = 2**63 - 10
    await sql(settings, "UPDATE affiliate_aggregates SET value_sum_minor = :v", v=near_limit)
    r = await convert(client, tenant, code=code, value="1.00", currency="USD")
    if settings.is_sqlite:  # 64-bit INTEGER would turn into a float: refused, nothing changes
        assert_problem(r, 422, "value_too_large")
        expected_count, expected_minor = 1, near_limit
    else:  # NUMERIC(38, 0) keeps going, exactly
        assert r.json() == {"status": "recorded"}
        expected_count, expected_minor = 2, near_limit + 100
    rows = await sql(settings, "SELECT conversions, value_sum_minor FROM affiliate_aggregates")
    assert [(int(c), int(s)) for c, s in rows] == [(expected_count, expected_minor)]
    whole, cents = divmod(expected_minor, 100)
    assert totals(await stats(client, tenant)) == {
        ("conversion", "USD"): (expected_count, f"{whole}.{cents:02d}")
    }
