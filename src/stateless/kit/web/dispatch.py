"""Route dispatch in front of FastAPI's router.

FastAPI (0.16x) keeps included routers as branches and matches a request twice per branch:
once to choose the branch, once inside it to choose the route, each candidate a regular
expression plus scope bookkeeping. For /health that was about a fifth of the request's CPU.
`RouteDispatch` sits where router-level middleware sits (inside the exception handlers and
FastAPI's exit stacks) and hands a request straight to the route FastAPI would choose, calling
the same ASGI app FastAPI's router would have called:

- a path without parameters is looked up in a dictionary;
- any other path is matched against the routes whose literal beginning it starts with, in
  FastAPI's order, with each route's own regular expression and parameter convertors.

What it cannot decide exactly goes through FastAPI's router unchanged: a path no route serves
with this method (FastAPI answers 404, 405 or a slash redirect), a path a non-API route (a
mount) could take, a route with a form body (its routers' form limits are applied by FastAPI's
router), or an app with dependency overrides in place.

`install_fast_path` is the one startup call: it checks the FastAPI and Starlette versions and
every borrowed name, that every planned route agrees with FastAPI's effective route
(kit/web/fastroute.py), that every API route yields a dispatch target, and then installs the
dispatch (unless `Settings.fast_routes` is off). A request dispatched here carries
`scope[DISPATCHED] = True` (tests assert it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, params
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.types import ASGIApp, Receive, Scope, Send

from stateless.kit.web.fastroute import (
    assert_plans_match,
    assert_supported_framework,
    turn_off_plans,
)

# Set on the scope of a request this dispatch handed to its route (tests read it).
DISPATCHED = "stateless.dispatched"


@dataclass(frozen=True)
class Target:
    """One route as FastAPI would call it."""

    methods: frozenset[str]
    route: APIRoute
    app: ASGIApp
    regex: re.Pattern[str]
    convertors: dict[str, Any]


@dataclass(frozen=True)
class Candidate:
    """A route a path may reach, with the literal text any matching path starts with; `target`
    is None for a route we do not dispatch ourselves (a mount, a plain Starlette route)."""

    literal: str
    regex: re.Pattern[str] | None
    target: Target | None


@dataclass(frozen=True)
class Table:
    exact: dict[str, tuple[Target, ...]]
    candidates: tuple[Candidate, ...]


def _literal_start(path: str) -> str:
    return path.split("{", 1)[0]


def _form_body(context: RouteContext) -> bool:
    body_field = getattr(context, "body_field", None)
    return body_field is not None and isinstance(body_field.field_info, params.Form)


def _target(context: RouteContext) -> Target | None:
    route = context.original_route
    if isinstance(route, APIRoute) and _form_body(context):
        return None  # FastAPI's router applies the including routers' form limits
    path = context.path
    methods = context.methods
    app = getattr(context, "app", None)
    regex = getattr(context, "path_regex", None)
    convertors = getattr(context, "param_convertors", None)
    if (
        isinstance(route, APIRoute)
        and isinstance(path, str)
        and methods
        and app is not None
        and isinstance(regex, re.Pattern)
        and isinstance(convertors, dict)
    ):
        return Target(frozenset(methods), route, app, regex, convertors)
    return None


def build_table(routes: Sequence[Any]) -> Table:
    exact: dict[str, list[Target]] = {}
    candidates: list[Candidate] = []
    for context in iter_route_contexts(list(routes)):
        target = _target(context)
        path = context.path if isinstance(context.path, str) else ""
        regex = getattr(context, "path_regex", None)
        candidate = Candidate(
            _literal_start(path) if path else "",
            regex if isinstance(regex, re.Pattern) else None,
            target,
        )
        # A parameterless path goes in the dictionary unless a route before it could take it.
        if (
            target is not None
            and "{" not in path
            and not any(_could_match(earlier, path) for earlier in candidates)
        ):
            exact.setdefault(path, []).append(target)
        candidates.append(candidate)
    return Table({p: tuple(t) for p, t in exact.items()}, tuple(candidates))


def _could_match(candidate: Candidate, path: str) -> bool:
    return candidate.regex is None or candidate.regex.match(path) is not None


class RouteDispatch:
    """Router-level middleware: a request goes straight to the route FastAPI would choose."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.router = fastapi_app.router
        self._table: Table | None = None
        self._built_for: tuple[int, int] = (0, -1)

    def _current(self) -> Table:
        """The table, rebuilt when routes were added since (tests add routes to built apps)."""
        routes = self.router.routes
        key = (id(routes), len(routes))
        if self._table is None or key != self._built_for:
            self._table = build_table(routes)
            self._built_for = key
        return self._table

    def _find(self, table: Table, path: str, method: str) -> tuple[Target, dict[str, Any]] | None:
        exact = table.exact.get(path)
        if exact is not None:
            for target in exact:
                if method in target.methods:
                    return target, {}
            return None  # FastAPI decides: a later route may serve this method, or 405
        for candidate in table.candidates:
            if not path.startswith(candidate.literal):
                continue
            if candidate.target is None:
                if candidate.regex is None or candidate.regex.match(path):
                    return None  # a mount or plain route could take it: FastAPI decides
                continue
            target = candidate.target
            match = target.regex.match(path)
            if match is None or method not in target.methods:
                continue
            params = {
                key: target.convertors[key].convert(value)
                for key, value in match.groupdict().items()
            }
            return target, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.fastapi_app.dependency_overrides:
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            found = self._find(self._current(), path, scope["method"])
            if found is not None:
                target, params = found
                scope[DISPATCHED] = True
                scope.setdefault("router", self.router)
                scope["endpoint"] = target.route.endpoint
                scope["route"] = target.route
                if params:
                    scope["path_params"] = {**scope.get("path_params", {}), **params}
                else:
                    scope.setdefault("path_params", {})
                await target.app(scope, receive, send)
                return
        await self.app(scope, receive, send)


def assert_dispatchable(app: FastAPI) -> None:
    """At startup: every API route (without a form body) yields a dispatch target, so a
    FastAPI that renamed what dispatch reads fails here, naming it, not silently slower."""
    for context in iter_route_contexts(list(app.routes)):
        if not isinstance(context.original_route, APIRoute) or _form_body(context):
            continue
        if _target(context) is None:
            missing = [
                name
                for name in ("app", "path_regex", "param_convertors", "methods", "path")
                if getattr(context, name, None) is None
            ]
            raise RuntimeError(
                f"{context.path}: FastAPI's route context lacks {missing or 'a usable shape'} "
                "(kit/web/dispatch.py reads RouteContext.app, .path_regex, .param_convertors)"
            )


def install_fast_path(app: FastAPI, *, enabled: bool = True) -> None:
    """The startup call for the fast path (see module doc). `enabled=False` (the
    `fast_routes` setting) leaves every request to FastAPI's own handler and router."""
    assert_supported_framework()
    assert_plans_match(app)
    assert_dispatchable(app)
    if enabled:
        install_route_dispatch(app)
    else:
        turn_off_plans(app)


def install_route_dispatch(app: FastAPI) -> None:
    """Put `RouteDispatch` in front of the app's router, where Starlette runs router-level
    middleware."""
    app.router.middleware_stack = RouteDispatch(app.router.middleware_stack, app)
