"""The shorter request path (kit/fastroute.py, kit/dispatch.py) answers exactly as FastAPI's
own handler and router do: the same app is built twice, once on FastAPI's classes and once on
ours, and every request below must get the same status, headers that matter and body."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Body, Cookie, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, Field

from stateless.config import Settings
from stateless.deps import TransactionRoute
from stateless.kit.dispatch import install_route_dispatch
from stateless.kit.fastroute import FastRoute, plan_for
from stateless.main import create_app


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    count: int = 1


class ItemOut(BaseModel):
    name: str
    count: int
    owner: str
    tag: str | None = None


class Gate:
    """A route-group gate: takes only the request, may refuse it."""

    async def __call__(self, request: Request) -> str:
        owner = request.headers.get("x-owner")
        if owner is None:
            raise HTTPException(401, "who are you")
        if owner == "slow":
            raise HTTPException(429, "slow down", headers={"Retry-After": "3"})
        return owner


Owner = Annotated[str, Depends(Gate())]


def build(route_class: type[APIRoute], dispatch: bool) -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/v1", route_class=route_class)

    @router.post("/items", response_model=ItemOut, status_code=201)
    async def create(body: Item, owner: Owner) -> dict[str, Any]:
        return {"name": body.name, "count": body.count, "owner": owner}

    @router.get("/items/{item_id}", response_model=ItemOut)
    async def read(
        item_id: int,
        owner: Owner,
        tag: Annotated[str | None, Query(max_length=5)] = None,
        trace: Annotated[str | None, Header(alias="X-Trace", max_length=4)] = None,
        session: Annotated[str | None, Cookie(max_length=4)] = None,
    ) -> dict[str, Any]:
        if item_id == 404:
            raise HTTPException(404, "no such item")
        tag = tag or trace or session
        return {"name": f"item-{item_id}", "count": item_id, "owner": owner, "tag": tag}

    @router.get("/items/special", response_model=ItemOut)  # shadowed by /items/{item_id}
    async def special(owner: Owner) -> dict[str, Any]:
        return {"name": "special", "count": 0, "owner": owner}

    @router.post("/echo", response_model=ItemOut)
    async def echo(body: Item, owner: Owner, request: Request) -> ItemOut:
        return ItemOut(name=body.name, count=body.count, owner=owner, tag=request.method)

    @router.post("/embedded", response_model=ItemOut)
    async def embedded(item: Annotated[Item, Body(embed=True)], owner: Owner) -> dict[str, Any]:
        return {"name": item.name, "count": item.count, "owner": owner}

    @router.get("/files/{name:path}", response_model=ItemOut)
    async def file(name: str, owner: Owner) -> dict[str, Any]:
        return {"name": name, "count": 0, "owner": owner}

    @router.get("/n/{num:int}", response_model=ItemOut)
    async def number(num: int, owner: Owner) -> dict[str, Any]:
        return {"name": "n", "count": num, "owner": owner}

    @router.delete("/items/{item_id}", status_code=204)
    async def delete(item_id: int, owner: Owner) -> None:
        return None

    @router.get("/bad-response", response_model=ItemOut)
    async def bad_response(owner: Owner) -> dict[str, Any]:
        return {"name": "no count"}

    app.include_router(router)
    if dispatch:
        install_route_dispatch(app)
    return app


OK = {"x-owner": "ann", "content-type": "application/json"}
REQUESTS: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("POST", "/v1/items", OK, b'{"name": "a", "count": 2}'),
    ("POST", "/v1/items", OK, b'{"name": ""}'),
    ("POST", "/v1/items", OK, b'{"name": "a", "count": "x"}'),
    ("POST", "/v1/items", OK, b"[1, 2]"),
    ("POST", "/v1/items", OK, b'"just a string"'),
    ("POST", "/v1/items", OK, b"null"),
    ("POST", "/v1/items", OK, b"{not json"),
    ("POST", "/v1/items", OK, b"\xff\xfe"),
    ("POST", "/v1/items", OK, b"[" * 50_000 + b"]" * 50_000),
    ("POST", "/v1/items", OK, b""),
    ("POST", "/v1/items", OK, None),
    ("POST", "/v1/items", {"x-owner": "ann"}, b'{"name": "a"}'),
    ("POST", "/v1/items", {"x-owner": "ann", "content-type": "text/plain"}, b'{"name": "a"}'),
    (
        "POST",
        "/v1/items",
        {"x-owner": "ann", "content-type": "application/vnd.api+json"},
        b'{"name": "a"}',
    ),
    (
        "POST",
        "/v1/items",
        {"x-owner": "ann", "content-type": "Application/JSON; charset=utf-8"},
        b'{"name": "a"}',
    ),
    (
        "POST",
        "/v1/items",
        {"x-owner": "ann", "content-type": "application/json; charset=latin-1"},
        b'{"name": "a"}',
    ),
    ("POST", "/v1/items", {"content-type": "application/json"}, b'{"name": "a"}'),
    ("POST", "/v1/items", {"content-type": "application/json"}, b"{not json"),
    ("POST", "/v1/items", {"content-type": "application/json"}, b'{"name": ""}'),
    ("POST", "/v1/items", {"x-owner": "slow", "content-type": "application/json"}, b"{}"),
    ("GET", "/v1/items/7", {"x-owner": "ann"}, None),
    ("GET", "/v1/items/7?tag=abc", {"x-owner": "ann"}, None),
    ("GET", "/v1/items/7?tag=toolong", {"x-owner": "ann"}, None),
    ("GET", "/v1/items/7", {"x-owner": "ann", "x-trace": "abc"}, None),
    ("GET", "/v1/items/7", {"x-owner": "ann", "x-trace": "abcdef"}, None),
    ("GET", "/v1/items/7", {"x-owner": "ann", "cookie": "session=ab"}, None),
    ("GET", "/v1/items/7", {"x-owner": "ann", "cookie": "session=abcdef"}, None),
    ("GET", "/v1/items/seven", {"x-owner": "ann"}, None),
    ("GET", "/v1/items/seven", {}, None),
    ("GET", "/v1/items/404", {"x-owner": "ann"}, None),
    ("GET", "/v1/items/special", {"x-owner": "ann"}, None),
    ("DELETE", "/v1/items/3", {"x-owner": "ann"}, None),
    ("PUT", "/v1/items", OK, b"{}"),
    ("GET", "/v1/items", {"x-owner": "ann"}, None),
    ("HEAD", "/v1/echo", {"x-owner": "ann"}, None),
    ("POST", "/v1/echo", OK, b'{"name": "e"}'),
    ("POST", "/v1/items/", OK, b'{"name": "a"}'),
    ("GET", "/v1/files/a/b/c.txt", {"x-owner": "ann"}, None),
    ("GET", "/v1/files/", {"x-owner": "ann"}, None),
    ("GET", "/v1/n/12", {"x-owner": "ann"}, None),
    ("GET", "/v1/n/x", {"x-owner": "ann"}, None),
    ("POST", "/v1/n/12", {"x-owner": "ann"}, None),
    ("POST", "/v1/embedded", OK, b'{"item": {"name": "a"}}'),
    ("POST", "/v1/embedded", OK, b'{"name": "a"}'),
    ("POST", "/v1/embedded", OK, b"[]"),
    ("POST", "/v1/embedded", OK, b""),
    ("GET", "/v1/nowhere", {}, None),
]


async def _answers(app: FastAPI) -> list[tuple[int, str | None, str | None, str | None, bytes]]:
    seen = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for method, path, headers, body in REQUESTS:
            r = await client.request(method, path, headers=headers, content=body)
            seen.append(
                (
                    r.status_code,
                    r.headers.get("content-type"),
                    r.headers.get("allow"),
                    r.headers.get("retry-after") or r.headers.get("location"),
                    r.content,
                )
            )
    return seen


async def test_planned_handler_and_exact_dispatch_answer_as_fastapi_does() -> None:
    reference = await _answers(build(APIRoute, dispatch=False))
    ours = await _answers(build(FastRoute, dispatch=True))
    for request, expected, got in zip(REQUESTS, reference, ours, strict=True):
        assert got == expected, request
    # the matrix exercises what it claims to: successes, each kind of refusal, the fallback
    statuses = {answer[0] for answer in reference}
    assert {200, 201, 204, 307, 401, 404, 405, 422, 429} <= statuses, statuses


async def test_response_model_violations_fail_the_same_way() -> None:
    for route_class, dispatch in ((APIRoute, False), (FastRoute, True)):
        transport = httpx.ASGITransport(
            app=build(route_class, dispatch), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/v1/bad-response", headers={"x-owner": "ann"})
        assert r.status_code == 500, route_class


async def test_exact_dispatch_follows_routes_added_later_and_the_root_path() -> None:
    app = build(FastRoute, dispatch=True)
    transport = httpx.ASGITransport(app=app, root_path="/mounted")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post("/mounted/v1/items", headers=OK, content=b'{"name": "r"}')
        assert r.status_code == 201 and r.json()["owner"] == "ann"

        @app.get("/late")
        async def late() -> dict[str, str]:
            return {"late": "yes"}

        assert (await client.get("/mounted/late")).json() == {"late": "yes"}


async def test_dependency_overrides_are_honoured() -> None:
    app = build(FastRoute, dispatch=True)

    async def anyone(request: Request) -> str:
        return "override"

    gate = next(
        sub.call
        for context in iter_route_contexts(list(app.routes))
        if isinstance(context.original_route, APIRoute)
        for sub in context.original_route.dependant.dependencies
    )
    assert gate is not None
    app.dependency_overrides[gate] = anyone
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post("/v1/items", content=b'{"name": "o"}', headers=OK)
    assert r.status_code == 201 and r.json()["owner"] == "override"


@pytest.mark.parametrize(
    "name",
    [
        "health",
        "affiliate.generate",
        "ios.register_token",
        "drafts.create",
        "drafts.read",
        "bots.execute",
    ],
)
def test_the_busiest_routes_take_the_planned_handler(name: str) -> None:
    """docs/performance.md's scenarios: each must stay on the short path (a new parameter
    kind on one of them would quietly put it back on FastAPI's general handler)."""
    app = create_app(Settings(_env_file=None))
    routes = {
        context.original_route.name: context.original_route
        for context in iter_route_contexts(list(app.routes))
        if isinstance(context.original_route, APIRoute)
    }
    assert name in routes, sorted(routes)
    route = routes[name]
    assert isinstance(route, FastRoute)
    assert plan_for(route) is not None


def test_every_session_route_is_a_transaction_route() -> None:
    app = create_app(Settings(_env_file=None))
    api = [
        context.original_route
        for context in iter_route_contexts(list(app.routes))
        if isinstance(context.original_route, APIRoute)
        and context.original_route.path.startswith("/api/v1/")
    ]
    assert api and all(isinstance(route, TransactionRoute) for route in api)
