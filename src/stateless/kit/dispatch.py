"""Exact-path dispatch in front of FastAPI's router.

FastAPI (0.16x) keeps included routers as branches and matches a request twice per branch:
once to choose the branch, once inside it to choose the route, each candidate a regular
expression plus scope bookkeeping. For /health that was about a fifth of the request's CPU.
Most of our paths have no parameters, so a dictionary from path to route answers them in one
lookup. `ExactPathDispatch` sits where router-level middleware sits (inside the exception
handlers and FastAPI's exit stacks) and hands such a request straight to the route's own ASGI
app, the same object FastAPI's router would have called. Anything else (path parameters,
a method the path does not serve, redirects, 404s) goes through FastAPI's router unchanged.

A path is only put in the table when no route before it in FastAPI's order could match it
too, so the table never changes which route answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.types import ASGIApp, Receive, Scope, Send

# path -> ((methods, route, its ASGI app), ...) in FastAPI's order
Table = dict[str, tuple[tuple[frozenset[str], APIRoute, ASGIApp], ...]]


def _could_match(context: RouteContext, path: str) -> bool:
    regex = getattr(context, "path_regex", None)
    return regex is None or regex.match(path) is not None  # unknown shape: assume it could


def build_table(routes: Sequence[object]) -> Table:
    table: dict[str, list[tuple[frozenset[str], APIRoute, ASGIApp]]] = {}
    before: list[RouteContext] = []
    for context in iter_route_contexts(list(routes)):  # type: ignore[arg-type]
        route = context.original_route
        path = context.path
        methods = context.methods
        app = getattr(context, "app", None)
        if (
            isinstance(route, APIRoute)
            and isinstance(path, str)
            and "{" not in path
            and methods
            and app is not None
            and not any(_could_match(earlier, path) for earlier in before)
        ):
            table.setdefault(path, []).append((frozenset(methods), route, app))
        else:
            before.append(context)
    return {path: tuple(entries) for path, entries in table.items()}


class ExactPathDispatch:
    """Router-level middleware: a parameterless path goes straight to its route."""

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.fastapi_app.dependency_overrides:
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            entries = self._current().get(path)
            if entries is not None:
                method = scope["method"]
                for methods, route, app in entries:
                    if method in methods:
                        scope.setdefault("router", self.router)
                        scope["endpoint"] = route.endpoint
                        scope["route"] = route
                        scope.setdefault("path_params", {})
                        await app(scope, receive, send)
                        return
        await self.app(scope, receive, send)


def install_exact_dispatch(app: FastAPI) -> None:
    """Put `ExactPathDispatch` in front of the app's router, where Starlette runs router-level
    middleware."""
    app.router.middleware_stack = ExactPathDispatch(app.router.middleware_stack, app)
