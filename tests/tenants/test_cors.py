"""Per-tenant CORS: preflight with X-App-ID/Authorization works; unknown origins get nothing."""

from __future__ import annotations

from tests.conftest import Client

ORIGIN = "https://app.example.com"


async def test_preflight_for_an_allowed_origin(client: Client, make_tenant) -> None:
    await make_tenant("web", cors_origins=[ORIGIN])
    r = await client.options(
        "/api/v1/drafts",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-app-id, authorization, content-type",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    allowed = r.headers["access-control-allow-headers"]
    assert "x-app-id" in allowed and "authorization" in allowed
    assert "POST" in r.headers["access-control-allow-methods"]


async def test_unknown_origin_gets_no_cors_headers(client: Client, make_tenant) -> None:
    tenant = await make_tenant("web", cors_origins=[ORIGIN])
    r = await client.options(
        "/api/v1/drafts",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.post(
        "/api/v1/drafts",
        headers={**tenant.pk, "Origin": "https://evil.example"},
        json={"content": "x"},
    )
    assert r.status_code == 201
    assert "access-control-allow-origin" not in r.headers


async def test_actual_request_gets_cors_only_for_its_own_tenant(
    client: Client, make_tenant
) -> None:
    web = await make_tenant("web", cors_origins=[ORIGIN])
    other = await make_tenant("other")
    r = await client.post(
        "/api/v1/drafts", headers={**web.pk, "Origin": ORIGIN}, json={"content": "x"}
    )
    assert r.status_code == 201
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "X-Request-ID" in r.headers["access-control-expose-headers"]
    # the origin belongs to another tenant, not to this one
    r = await client.post(
        "/api/v1/drafts", headers={**other.pk, "Origin": ORIGIN}, json={"content": "x"}
    )
    assert r.status_code == 201
    assert "access-control-allow-origin" not in r.headers
