"""Problem `type` pages (/problems/{code}) and 415 for bodies that are not JSON (SPEC 1)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import stateless
from stateless.kit.web.errors import _CODES_BY_STATUS, ProblemError
from stateless.kit.web.problems import CATALOGUE
from tests.conftest import Client, TenantHandle
from tests.test_core import assert_problem

SRC = Path(stateless.__file__).parent


def _codes_in_source() -> set[str]:
    for module in pkgutil.walk_packages(stateless.__path__, "stateless."):
        if ".migrations" not in module.name:
            importlib.import_module(module.name)
    codes = set(_CODES_BY_STATUS.values())
    stack: list[type[ProblemError]] = [ProblemError]
    while stack:
        cls = stack.pop()
        codes.add(cls.code)
        stack.extend(cls.__subclasses__())
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        codes |= set(re.findall(r'with_code\(\s*"([a-z0-9_]+)"', text))
        codes |= set(re.findall(r'\bcode="([a-z0-9_]+)"', text))
    return codes


def test_every_code_in_the_source_has_a_page() -> None:
    missing = sorted(_codes_in_source() - set(CATALOGUE))
    assert missing == [], f"add these codes to kit/web/problems.py CATALOGUE: {missing}"


async def test_problem_pages(client: Client) -> None:
    page = await client.get("/problems/ttl_out_of_range")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "ttl_seconds out of range" in page.text and "data-inventory" in page.text
    data = await client.get("/problems/unauthorized", headers={"Accept": "application/json"})
    assert data.json()["status"] == 401 and "stateless tenants create" in data.json()["description"]
    generic = await client.get("/problems/some_future_code")
    assert generic.status_code == 200 and "some_future_code" in generic.text
    assert_problem(await client.get("/problems/Not-A-Code"), 404, "not_found")


async def test_problem_type_resolves_on_the_host_that_answered(client: Client) -> None:
    response = await client.get("/api/v1/admin/stats")
    assert response.json()["type"] == "/problems/missing_app_id"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"content=hello"),
        ("text/plain", b'{"content": "hello"}'),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="content"\r\n\r\nhi\r\n--x--\r\n',
        ),
        ("application/xml", b"<content>hello</content>"),
    ],
)
async def test_non_json_body_is_415(
    client: Client, tenant: TenantHandle, content_type: str, body: bytes
) -> None:
    headers = {**tenant.pk, "Content-Type": content_type}
    for path in ("/api/v1/drafts", "/api/v1/affiliate/generate"):
        response = await client.post(path, headers=headers, content=body)
        problem = assert_problem(response, 415, "unsupported_media_type")
        assert "Content-Type: application/json" in problem["detail"]
        assert problem["type"] == "/problems/unsupported_media_type"


async def test_json_bodies_still_accepted(client: Client, tenant: TenantHandle) -> None:
    for content_type in ("application/json", "application/json; charset=utf-8"):
        headers = {**tenant.pk, "Content-Type": content_type}
        response = await client.post("/api/v1/drafts", headers=headers, content=b'{"content": "x"}')
        assert response.status_code == 201, (content_type, response.text)
    bad_json = await client.post(
        "/api/v1/drafts",
        headers={**tenant.pk, "Content-Type": "application/json"},
        content=b"content=hello",
    )
    assert_problem(bad_json, 422, "validation_error")
    undeclared = await client.post("/api/v1/drafts", headers=tenant.pk, content=b'{"content": 1}')
    assert (
        "got no Content-Type" in assert_problem(undeclared, 415, "unsupported_media_type")["detail"]
    )
    empty = await client.post("/api/v1/drafts", headers=tenant.pk)
    assert_problem(empty, 422, "validation_error")


async def test_openapi_documents_415_for_json_bodies(client: Client) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "415" in paths["/api/v1/drafts"]["post"]["responses"]
    assert "415" not in paths["/api/v1/drafts"]["get"]["responses"]


def test_a_timeout_caused_in_the_driver_is_the_database_being_unavailable() -> None:
    """A waiter handed another request's failed lookup sees the timeout with its own frames
    only; its cause still comes from the driver, so it answers 503, not 500."""
    from stateless.kit.web.errors import is_database_unavailable

    driver: dict[str, object] = {"__name__": "asyncpg.connect_utils"}
    exec("def connect():\n    raise ConnectionResetError('cancelled connect')\n", driver)

    def waiter() -> None:
        try:
            driver["connect"]()  # type: ignore[operator]
        except ConnectionResetError as exc:
            raise TimeoutError() from exc

    try:
        waiter()
    except TimeoutError as exc:
        shared = exc
    shared.__traceback__ = None  # as a waiter re-raising it from its own frames sees it
    assert is_database_unavailable(shared)
    assert not is_database_unavailable(TimeoutError())  # a timeout of ours is not the database
