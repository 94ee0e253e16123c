"""The shorter request path (kit/web/fastroute.py, kit/web/dispatch.py) answers exactly as FastAPI's
own handler and router do: the same app is built twice, once on FastAPI's classes and once on
ours, and every request below must get the same status, headers that matter and body."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Body, Cookie, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, Field

from stateless.config import Settings
from stateless.deps import TransactionRoute
from stateless.kit.web.dispatch import DISPATCHED, install_fast_path, install_route_dispatch
from stateless.kit.web.fastroute import (
    BORROWED,
    GENERAL,
    PLANNED,
    SERVED_BY,
    FastRoute,
    assert_plans_match,
    assert_supported_framework,
    plan_for,
)
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


# Per request above, in order: which handler served it on our classes and through which
# dispatch. P: the planned handler, through our dispatch; F: FastAPI's handler (a fallback),
# through our dispatch; R: no handler at all, FastAPI's router answered (404, 405, redirect).
# The DELETE answers 204 without a response model: not our shape, FastAPI's handler serves it.
# If the plan or the dispatch quietly stopped working, these would no longer hold.
SERVED = "PPPPPPFFFPPFFFPPPFPPPPPPPPPPPPPFRRRPRPPPRRPPPPR"
TAGS = {"P": (PLANNED, True), "F": (GENERAL, True), "R": (None, False)}


class Recorder:
    """ASGI wrapper that keeps, per request, the markers the fast path leaves on the scope."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str | None, bool]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.seen.append((scope.get(SERVED_BY), bool(scope.get(DISPATCHED))))


async def _answers(
    app: FastAPI, recorder: Recorder | None = None
) -> list[tuple[int, str | None, str | None, str | None, bytes]]:
    seen = []
    transport = httpx.ASGITransport(app=recorder or app)
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
    reference_app = build(APIRoute, dispatch=False)
    reference_paths = Recorder(reference_app)
    reference = await _answers(reference_app, reference_paths)
    our_app = build(FastRoute, dispatch=True)
    our_paths = Recorder(our_app)
    ours = await _answers(our_app, our_paths)
    for request, expected, got in zip(REQUESTS, reference, ours, strict=True):
        assert got == expected, request
    # ... and each answer came the way it should: FastAPI's classes never touch the fast path,
    # ours take it for every plain request (a plan_for returning None fails here)
    assert reference_paths.seen == [(None, False)] * len(REQUESTS)
    assert len(SERVED) == len(REQUESTS)
    for request, tag, path in zip(REQUESTS, SERVED, our_paths.seen, strict=True):
        assert path == TAGS[tag], (request, tag, path)
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


# -- the plan follows FastAPI's effective route (include- and app-level settings) -------------


class Auth:
    """An include-level or app-level gate: refuses a request without credentials."""

    async def __call__(self, request: Request) -> None:
        if request.headers.get("authorization") != "Bearer ok":
            raise HTTPException(401, "credentials required")


async def header_auth(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    """The same gate with a header parameter: not a request-only call, so not planned."""
    if authorization != "Bearer ok":
        raise HTTPException(401, "credentials required")


class TaggedJSON(JSONResponse):
    media_type = "application/vnd.tagged+json"


def open_router(route_class: type[APIRoute]) -> APIRouter:
    """A router with no protection of its own: the including app adds it."""
    router = APIRouter(prefix="/open", route_class=route_class)

    @router.get("/secret", response_model=ItemOut)
    async def secret(owner: Owner) -> dict[str, Any]:
        return {"name": "secret", "count": 1, "owner": owner}

    @router.post("/secret", response_model=ItemOut)
    async def post_secret(body: Item, owner: Owner) -> dict[str, Any]:
        return {"name": body.name, "count": body.count, "owner": owner}

    return router


INCLUDES: dict[str, Callable[[FastAPI, APIRouter], None]] = {
    "include dependencies": lambda app, r: app.include_router(r, dependencies=[Depends(Auth())]),
    "include header dependency": lambda app, r: app.include_router(
        r, dependencies=[Depends(header_auth)]
    ),
    "include response class": lambda app, r: app.include_router(
        r, default_response_class=TaggedJSON
    ),
    "include body limit": lambda app, r: app.include_router(r, max_body_size=16),
    "include concurrency": lambda app, r: app.include_router(
        r, dependencies=[Depends(Auth(), max_concurrency=2)]
    ),
}


def build_included(route_class: type[APIRoute], how: str) -> FastAPI:
    if how == "app dependencies":
        app = FastAPI(dependencies=[Depends(Auth())])
        app.include_router(open_router(route_class))
    else:
        app = FastAPI()
        INCLUDES[how](app, open_router(route_class))
    if route_class is FastRoute:
        install_fast_path(app)
    return app


INCLUDED_REQUESTS: list[tuple[str, dict[str, str], bytes | None]] = [
    ("GET", {"x-owner": "ann"}, None),
    ("GET", {"x-owner": "ann", "authorization": "Bearer ok"}, None),
    ("GET", {"authorization": "Bearer ok"}, None),
    ("POST", {**OK, "authorization": "Bearer ok"}, b'{"name": "n"}'),
    ("POST", {**OK, "authorization": "Bearer ok"}, b'{"name": "' + b"x" * 40 + b'"}'),
    ("POST", OK, b'{"name": "n"}'),
]


@pytest.mark.parametrize("how", [*INCLUDES, "app dependencies"])
async def test_include_and_app_level_settings_are_applied_as_fastapi_applies_them(
    how: str,
) -> None:
    """The latent bypass of issue 25: a router included with `dependencies=[Depends(auth)]`
    answered 200 on the planned handler where FastAPI answers 401. Include-level response
    class, body limit and concurrency limits must equally be FastAPI's."""
    answers = []
    for route_class in (APIRoute, FastRoute):
        app = build_included(route_class, how)
        recorder = Recorder(app)
        seen = []
        transport = httpx.ASGITransport(app=recorder)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for method, headers, body in INCLUDED_REQUESTS:
                r = await client.request(method, "/open/secret", headers=headers, content=body)
                seen.append((r.status_code, r.headers.get("content-type"), r.content))
        answers.append((seen, recorder.seen))
    (reference, _), (ours, paths) = answers
    for request, expected, got in zip(INCLUDED_REQUESTS, reference, ours, strict=True):
        assert got == expected, (how, request)
    if how in ("include dependencies", "app dependencies"):
        assert reference[0][0] == 401 and reference[1][0] == 200
        # the gate is planned with the include's dependency in front of the route's own
        assert {served for served, _ in paths} == {PLANNED}
    else:
        # a shape the planner does not take: FastAPI's handler, never a wrong plan
        assert {served for served, _ in paths} == {GENERAL}, how
    if how == "include response class":
        assert reference[1][1] == "application/vnd.tagged+json"
    if how == "include body limit":
        assert reference[4][0] == 413


def test_a_plan_that_disagrees_with_fastapi_refuses_to_start() -> None:
    app = build_included(FastRoute, "include dependencies")
    route = next(
        context.original_route
        for context in iter_route_contexts(list(app.routes))
        if isinstance(context.original_route, FastRoute)
    )
    assert isinstance(route, FastRoute)
    # what the planner did before the fix: plan from the route as declared, not as included
    declared = plan_for(route)
    assert declared is not None and len(declared.gates) == 1
    route.__dict__["_built_plans"] = [weakref.ref(declared)]
    with pytest.raises(RuntimeError, match="not built from FastAPI's effective route"):
        assert_plans_match(app)


def test_unsupported_framework_versions_and_missing_internals_refuse_to_start() -> None:
    assert_supported_framework()  # what is installed is what is supported
    with pytest.raises(RuntimeError) as caught:
        assert_supported_framework({"fastapi": "0.166.1", "starlette": "1.10.0"})
    message = str(caught.value)
    assert "fastapi 0.166.1 is installed" in message and "fastapi 0.165.x" in message
    assert "\n" not in message
    with pytest.raises(RuntimeError, match=r"starlette 1\.11\.0 is installed.*starlette 1\.10\.x"):
        assert_supported_framework({"fastapi": "0.165.0", "starlette": "1.11.0"})
    with pytest.raises(RuntimeError, match=r"fastapi\.routing\._gone is missing"):
        assert_supported_framework(borrowed=[("fastapi.routing", "_gone")])


def test_every_borrowed_name_is_listed() -> None:
    """Each non-public name kit/web/fastroute.py and kit/web/dispatch.py use is in BORROWED (the startup
    check), so a FastAPI that drops one fails at startup, naming it."""
    names = {dotted.split(".")[0] for _, dotted in BORROWED}
    assert {
        "_effective_route_context_var",
        "request_params_to_args",
        "request_body_to_args",
    } <= names
    for module in ("fastroute", "dispatch"):
        source = (Path(__file__).parents[1] / "src/stateless/kit/web" / f"{module}.py").read_text()
        # serialize_response and is_body_allowed_for_status_code moved onto a plan-time TypeAdapter
        imports = [line for line in source.splitlines() if line.startswith(("from ", "import "))]
        assert not [line for line in imports if "serialize_response" in line]
        assert not [line for line in imports if "is_body_allowed_for_status_code" in line]


async def test_the_switch_serves_everything_with_fastapi() -> None:
    """`Settings(fast_routes=False)`: the debugging switch; every answer is FastAPI's own."""
    seen = []
    for fast_routes in (True, False):
        app = create_app(Settings(_env_file=None, fast_routes=fast_routes))
        recorder = Recorder(app)
        transport = httpx.ASGITransport(app=recorder)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            # refused before any dependency runs (no lifespan needed)
            r = await client.post(
                "/api/v1/drafts", content=b'{"a": ', headers={"content-type": "application/json"}
            )
        problem = r.json()
        problem.pop("request_id")
        seen.append((r.status_code, problem, recorder.seen))
    (on_status, on_body, on_paths), (off_status, off_body, off_paths) = seen
    assert (on_status, on_body) == (off_status, off_body) and on_status == 422
    assert on_paths == [(GENERAL, True)]  # undecodable JSON: FastAPI's handler, our dispatch
    assert off_paths == [(GENERAL, False)]
