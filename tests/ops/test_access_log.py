"""The access log: one JSON line per request, written by the edge, redaction kept."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ClientFactory, TenantFactory


async def test_one_json_line_per_request_with_route_tenant_and_request_id(
    capsys: pytest.CaptureFixture[str], make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    client = await make_client(log_format="json")
    tenant = await make_tenant("app-a")
    secret_id = "alice@example.com"
    capsys.readouterr()
    r = await client.get(
        f"/api/v1/drafts/{secret_id}", headers={**tenant.pk, "X-Request-ID": "req-42"}
    )
    assert r.status_code == 404
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("logger") == "stateless.access"]
    assert len(access) == 1, lines
    (line,) = access
    assert line["event"] == "request" and line["level"] == "info"
    assert line["route"] == "/api/v1/drafts/{draft_id}" and line["method"] == "GET"
    assert line["status"] == 404 and line["tenant"] == "app-a"
    assert line["request_id"] == "req-42" and line["timestamp"].endswith("Z")
    assert secret_id not in json.dumps(lines)


async def test_access_log_follows_the_log_level(
    capsys: pytest.CaptureFixture[str], make_client: ClientFactory
) -> None:
    client = await make_client(log_format="json", log_level="WARNING")
    capsys.readouterr()
    assert (await client.get("/")).status_code == 200
    assert "stateless.access" not in capsys.readouterr().out
