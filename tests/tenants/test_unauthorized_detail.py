"""The 401 tells a caller what to send and where keys come from, identically in every case."""

from __future__ import annotations

from tests.conftest import Client, TenantHandle

URL = "/api/v1/admin/stats"


async def test_every_401_is_identical_and_says_what_to_send(
    client: Client, tenant: TenantHandle, other_tenant: TenantHandle
) -> None:
    cases = {
        "unknown app": {
            "X-App-ID": "never-registered",
            "Authorization": tenant.sk["Authorization"],
        },
        "missing key": {"X-App-ID": tenant.app_id},
        "not bearer": {"X-App-ID": tenant.app_id, "Authorization": "Basic abc"},
        "wrong key": {"X-App-ID": tenant.app_id, "Authorization": "Bearer sk_000000000000_nope"},
        "garbage key": {"X-App-ID": tenant.app_id, "Authorization": "Bearer hello"},
        "other app's key": {
            "X-App-ID": tenant.app_id,
            "Authorization": other_tenant.sk["Authorization"],
        },
    }
    bodies = {}
    for name, headers in cases.items():
        response = await client.get(URL, headers=headers)
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"] == "Bearer"
        body = response.json()
        assert body["code"] == "unauthorized"
        body.pop("request_id")
        bodies[name] = body
    first = next(iter(bodies.values()))
    assert all(body == first for body in bodies.values()), bodies
    detail = first["detail"]
    for needed in ("X-App-ID: <app_id>", "Authorization: Bearer <key>", "pk_", "sk_"):
        assert needed in detail, needed
    assert "stateless tenants create" in detail  # where keys come from
