"""Core endpoints and the HTTP edge: problem+json everywhere, request ids, body limits."""

from __future__ import annotations

import uuid

import pytest

from stateless.kit.web.middleware import new_request_id
from tests.conftest import Client, ClientFactory, TenantHandle

PROBLEM = "application/problem+json"


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code)
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_root_echoes_valid_tenant_only(client: Client) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert r.json()["tenant"] is None and r.json()["version"]
    assert (await client.get("/", headers={"X-App-ID": "my-app"})).json()["tenant"] == "my-app"
    assert (await client.get("/", headers={"X-App-ID": "<script>"})).json()["tenant"] is None


async def test_health_is_limited_to_ten_per_minute_per_app(client: Client) -> None:
    for i in range(10):
        r = await client.get("/health", headers={"X-App-ID": "probe"})
        assert r.status_code == 200, i
        assert r.json() == {"status": "ok", "env": "test"}
        assert r.headers["ratelimit-policy"] == '"health";q=10;w=60'
        assert r.headers["ratelimit"].startswith(f'"health";r={9 - i};t=')
    eleventh = await client.get("/health", headers={"X-App-ID": "probe"})
    assert_problem(eleventh, 429, "rate_limited")
    assert 1 <= int(eleventh.headers["retry-after"]) <= 60
    # another app id has its own bucket; so does the anonymous caller
    assert (await client.get("/health", headers={"X-App-ID": "other"})).status_code == 200
    assert (await client.get("/health")).status_code == 200


async def test_ready_checks_the_database_and_is_not_limited(client: Client) -> None:
    for _ in range(15):
        r = await client.get("/health/ready")
        assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok"}


async def test_ready_answers_503_problem_when_redis_is_down(make_client: ClientFactory) -> None:
    client = await make_client(redis_url="redis://127.0.0.1:1/0")
    r = await client.get("/health/ready")
    body = assert_problem(r, 503, "service_unavailable")
    assert body["checks"]["redis"] == "unavailable"


async def test_request_id_is_echoed_when_sane_and_generated_otherwise(client: Client) -> None:
    r = await client.get("/", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/", headers={"X-Request-ID": "bad id with spaces"})
    assert (
        r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) >= 32
    )


async def test_unknown_route_and_wrong_method_are_problems(client: Client) -> None:
    assert_problem(await client.get("/nope"), 404, "not_found")
    assert_problem(await client.delete("/health"), 405, "method_not_allowed")


async def test_validation_errors_are_422_problems_with_errors_list(
    client: Client, tenant: TenantHandle
) -> None:
    r = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": 5})
    body = assert_problem(r, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "content"]
    r = await client.post(
        "/api/v1/drafts",
        headers={**tenant.pk, "content-type": "application/json"},
        content=b"{not json",
    )
    assert_problem(r, 422, "validation_error")


async def test_body_over_limit_is_413_with_content_length(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    client = await make_client(max_request_body_bytes=2048)
    r = await client.post("/api/v1/drafts", headers=tenant.pk, json={"content": "x" * 4096})
    assert_problem(r, 413, "payload_too_large")


async def test_body_over_limit_is_413_when_chunked_without_length(
    make_client: ClientFactory, tenant: TenantHandle
) -> None:
    client = await make_client(max_request_body_bytes=2048)

    async def chunks():
        yield b'{"content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = await client.post(
        "/api/v1/drafts",
        headers={**tenant.pk, "content-type": "application/json"},
        content=chunks(),
    )
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "payload_too_large")
    # nothing was stored
    listing = await client.get("/api/v1/drafts", headers=tenant.sk)
    assert listing.json()["drafts"] == []


async def test_unexpected_errors_become_500_problems_without_internals(
    make_client: ClientFactory,
) -> None:
    client = await make_client()

    async def explode() -> None:
        raise RuntimeError("database password is hunter2")

    client.app.add_api_route("/explode", explode)
    r = await client.get("/explode")
    body = assert_problem(r, 500, "internal_error")
    assert "hunter2" not in r.text and "RuntimeError" not in r.text
    assert body["request_id"]


async def test_metrics_requires_token_when_configured(make_client: ClientFactory) -> None:
    client = await make_client(metrics_token="m" * 40)
    assert_problem(await client.get("/metrics"), 401, "unauthorized")
    r = await client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40})
    assert r.status_code == 200
    assert "stateless_http_requests_total" in r.text


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
async def test_docs_are_served(client: Client, path: str) -> None:
    assert (await client.get(path)).status_code == 200


async def test_the_served_app_settles_its_startup_heap(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path
) -> None:
    """What servers run (`stateless.main:app`) moves the heap built at startup out of the
    garbage collector's scans once startup completed, and still answers requests."""
    import gc

    import httpx
    from asgi_lifespan import LifespanManager

    from stateless.main import _LazyApp
    from tests.conftest import TEST_AFFILIATE_SALT, TEST_SECRET_KEY

    for name, value in {
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "AFFILIATE_SALT": TEST_AFFILIATE_SALT,
        "RUN_BACKGROUND_JOBS": "false",
        "STORAGE_LOCAL_PATH": str(tmp_path / "storage"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    gc.unfreeze()
    served = _LazyApp()
    try:
        async with LifespanManager(served, startup_timeout=30) as manager:
            assert gc.get_freeze_count() > 10_000
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.get("/")).status_code == 200
    finally:
        gc.unfreeze()


def test_generated_request_ids_are_version_4_uuids() -> None:
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
