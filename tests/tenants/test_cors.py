"""Per-tenant CORS: preflight with X-App-ID/Authorization works; unknown origins get nothing."""

from __future__ import annotations

from tests.conftest import Client
from tests.test_core import assert_problem

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


OTHER_ORIGIN = "https://other.example.com"


async def test_signed_storage_urls_answer_cors_for_the_tenant_that_signed_them(
    client: Client, make_tenant
) -> None:
    web = await make_tenant("web", cors_origins=[ORIGIN])
    await make_tenant("other", cors_origins=[OTHER_ORIGIN])
    created = await client.post(
        "/api/v1/storage/objects",
        headers=web.pk,
        json={"content_type": "text/plain", "content_length": 5},
    )
    url = created.json()["upload"]["url"].removeprefix("http://testserver")
    # the preflight is answered for the URL's own tenant's origin only
    for origin, allowed in ((ORIGIN, True), (OTHER_ORIGIN, False)):
        r = await client.options(
            url,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert (r.status_code == 204) is allowed
        assert ("access-control-allow-origin" in r.headers) is allowed
    r = await client.put(
        url, headers={"Origin": ORIGIN, "Content-Type": "text/plain"}, content=b"hello"
    )
    assert r.status_code in (200, 201), r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    # a repeat is refused; its tenant's page may read why, another origin may not
    r = await client.put(
        url, headers={"Origin": ORIGIN, "Content-Type": "text/plain"}, content=b"hello"
    )
    assert r.status_code == 409 and r.headers["access-control-allow-origin"] == ORIGIN
    r = await client.put(
        url, headers={"Origin": OTHER_ORIGIN, "Content-Type": "text/plain"}, content=b"hello"
    )
    assert r.status_code == 409 and "access-control-allow-origin" not in r.headers
    meta = await client.get(
        f"/api/v1/storage/objects/{created.json()['object_id']}", headers=web.pk
    )
    download = meta.json()["download_url"].removeprefix("http://testserver")
    r = await client.get(download, headers={"Origin": ORIGIN})
    assert r.status_code == 200 and r.content == b"hello"
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "Content-Disposition" in r.headers["access-control-expose-headers"]
    r = await client.get(download, headers={"Origin": OTHER_ORIGIN})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


async def test_problems_before_a_tenant_is_known_are_readable_by_listed_origins_only(
    client: Client, make_tenant
) -> None:
    web = await make_tenant("web", cors_origins=[ORIGIN])
    cases = [
        ({}, 400, "missing_app_id"),
        ({"X-App-ID": "bad app"}, 400, "invalid_app_id"),
        (
            {"X-App-ID": "no-such-app", "Authorization": web.pk["Authorization"]},
            401,
            "unauthorized",
        ),
        ({"X-App-ID": "web", "Authorization": "Bearer sk_000000000000_x"}, 401, "unauthorized"),
    ]
    for headers, status, code in cases:
        r = await client.post("/api/v1/drafts", headers={**headers, "Origin": ORIGIN}, json={})
        assert (r.status_code, r.json()["code"]) == (status, code)
        assert r.headers["access-control-allow-origin"] == ORIGIN
        exposed = r.headers["access-control-expose-headers"]
        for name in ("X-Request-ID", "WWW-Authenticate", "Retry-After", "RateLimit"):
            assert name in exposed
        # an origin no tenant lists learns nothing, not even why
        r = await client.post(
            "/api/v1/drafts", headers={**headers, "Origin": "https://evil.example"}, json={}
        )
        assert r.status_code == status
        assert "access-control-allow-origin" not in r.headers
    # once a tenant is proven, only its own origins may read its answers, problems included
    other = await make_tenant("other")
    r = await client.post(
        "/api/v1/drafts", headers={**other.pk, "Origin": ORIGIN}, json={"content": 5}
    )
    assert r.status_code == 422
    assert "access-control-allow-origin" not in r.headers


async def test_a_500_the_app_could_not_answer_is_readable_by_a_listed_origin(
    make_client, make_tenant
) -> None:
    """An unexpected failure is answered by the edge; a page on a listed origin still reads
    the problem (it holds no tenant data), an unlisted origin gets no CORS headers."""
    await make_tenant("web-app", cors_origins=["https://app.example"])
    client = await make_client()

    async def explode() -> None:
        raise RuntimeError("boom")

    client.app.add_api_route("/explode", explode)
    r = await client.get("/explode", headers={"Origin": "https://app.example"})
    assert_problem(r, 500, "internal_error")
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "X-Request-ID" in r.headers["access-control-expose-headers"]
    r = await client.get("/explode", headers={"Origin": "https://evil.example"})
    assert_problem(r, 500, "internal_error")
    assert "access-control-allow-origin" not in r.headers
