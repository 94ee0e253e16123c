"""Regressions found by fuzzing /openapi.json with schemathesis (bench/fuzz.py)."""

from __future__ import annotations

from tests.conftest import Client, TenantHandle
from tests.test_core import assert_problem

PROBLEM_STATUSES = {"400", "401", "413", "422", "429", "500", "503"}


async def test_stats_until_the_first_day_there_is_does_not_overflow(
    client: Client, tenant: TenantHandle
) -> None:
    """`until=0001-01-01` without `since`: the default 90-day window used to start before
    date.min and the server answered 500 (OverflowError). Dates are now bounded to years
    1970-9999 (SPEC 1); the earliest allowed day works with the default window."""
    r = await client.get(
        "/api/v1/affiliate/stats", params={"until": "0001-01-01"}, headers=tenant.sk
    )
    assert_problem(r, 422, "validation_error")
    r = await client.get(
        "/api/v1/affiliate/stats", params={"until": "1970-01-01"}, headers=tenant.sk
    )
    assert r.status_code == 200, r.text
    assert r.json()["days"] == []


async def test_every_operation_documents_problem_responses(client: Client) -> None:
    """Responses conform to the document: each error a route can answer is declared as
    application/problem+json with the Problem schema."""
    document = (await client.get("/openapi.json")).json()
    assert document["components"]["schemas"]["Problem"]["required"] == [
        "type",
        "title",
        "status",
        "detail",
        "code",
        "request_id",
    ]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            declared = set(operation["responses"])
            assert {"422", "500", "503"} <= declared, (method, path)
            for status in declared & PROBLEM_STATUSES:
                content = operation["responses"][status]["content"]
                assert "application/problem+json" in content, (method, path, status)
    drafts = document["paths"]["/api/v1/drafts"]["post"]
    assert {"400", "401", "413", "422", "429", "500", "503"} <= set(drafts["responses"])
    assert drafts["security"] == [{"AppId": [], "ApiKey": []}]
    stats = document["paths"]["/api/v1/admin/stats"]["get"]
    assert "403" in stats["responses"] and stats["security"] == [{"AppId": [], "SecretKey": []}]


async def test_undocumented_validation_shape_is_gone(client: Client, tenant: TenantHandle) -> None:
    """FastAPI's own 422 schema (HTTPValidationError) is not what we send; it is not documented."""
    document = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    r = await client.post("/api/v1/drafts", headers=tenant.pk, json={})
    assert_problem(r, 422, "validation_error")
