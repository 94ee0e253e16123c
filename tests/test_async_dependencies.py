"""Every endpoint and dependency is async: FastAPI runs plain `def` ones in a thread pool,
which costs a thread hop per request on the hot path (and hides blocking calls)."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from stateless.config import Settings
from stateless.main import create_app


def _is_async(call: Any) -> bool:
    target = (
        call
        if inspect.isfunction(call) or inspect.ismethod(call)
        else getattr(call, "__call__", call)
    )
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def _walk(dependant: Dependant, found: list[str]) -> None:
    for sub in dependant.dependencies:
        if sub.call is not None and not _is_async(sub.call):
            found.append(getattr(sub.call, "__qualname__", repr(sub.call)))
        _walk(sub, found)


def test_no_sync_endpoints_or_dependencies() -> None:
    app = create_app(Settings(_env_file=None))
    sync: list[str] = []
    routes = [
        context.original_route
        for context in iter_route_contexts(list(app.routes))
        if isinstance(context.original_route, APIRoute)
    ]
    assert len(routes) >= 25, f"only {len(routes)} routes seen; the walk is broken"
    for route in routes:
        if not _is_async(route.endpoint):
            sync.append(route.endpoint.__qualname__)
        _walk(route.dependant, sync)
    assert not sync, f"make these async def: {sorted(set(sync))}"
