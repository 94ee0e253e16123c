"""FastAPI dependencies shared by every router.

Each route group has one dependency (`KeyedService`, `PathService`) that authenticates,
rate-limits, opens the request's session and hands the handler its service: one plain call
for FastAPI to solve, no nested chains and no generator (a test keeps it so). The routers'
route class, `TransactionRoute`, settles that session when the handler returns, before the
response leaves: committed on success, rolled back on any exception.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.routing import Match
from starlette.types import Scope

from stateless.container import Container
from stateless.kit.data.context import TenantContext
from stateless.kit.data.db import settle
from stateless.kit.web.fastroute import FastRoute
from stateless.tenants.auth import PATH_TENANT_PROBLEMS, TenantAuth, tenant_from_path

# Routers carry the full prefix themselves, so route templates in logs and metrics are whole.
API_V1 = "/api/v1"

S = TypeVar("S")
# Builds a route group's service from the app's providers, the request's transaction and tenant.
ServiceBuilder = Callable[[Container, AsyncSession, TenantContext, Request], S]


async def get_container(request: Request) -> Container:
    """Async on purpose: FastAPI runs plain `def` dependencies in a thread pool."""
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


# Where the request's session waits for `TransactionRoute` (the request's own state).
_SESSION = "db_session"


def _session(request: Request, container: Container) -> AsyncSession:
    """The request's session. Reads (GET, HEAD) run in autocommit: a lone SELECT needs no
    BEGIN/COMMIT around it."""
    read_only = request.method in ("GET", "HEAD")
    maker: async_sessionmaker[AsyncSession] = (
        container.read_sessionmaker if read_only else container.sessionmaker
    )
    session = maker()
    request.scope["state"][_SESSION] = session
    return session


class TransactionRoute(FastRoute):
    """Settles the session a route-group dependency opened, after the handler and before the
    response is sent: a failed commit still answers a problem, never a false success. The
    handler itself is `FastRoute`'s (kit/web/fastroute.py)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def settled(request: Request) -> Response:
            try:
                response = await handler(request)
            except BaseException:
                session = request.scope["state"].pop(_SESSION, None)
                if session is not None:
                    await settle(session, failed=True)
                raise
            session = request.scope["state"].pop(_SESSION, None)
            if session is not None:
                await settle(session, failed=False)
            return response

        return settled


class RouteGroup(APIRouter):
    """A router that declines a path outside its prefix at once. FastAPI tries every route of
    every included router in turn (a regular-expression match each), so without this a request
    to the last group paid for matching every route of the groups before it."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if not path.startswith(self.prefix):
            return Match.NONE, {}
        return super().matches(scope)


def api_router(prefix: str, tags: list[str]) -> APIRouter:
    """A route group whose handlers' sessions are settled by `TransactionRoute`."""
    return RouteGroup(prefix=prefix, tags=list(tags), route_class=TransactionRoute)


def assert_transactional(app: FastAPI) -> None:
    """At startup: every route that opens a session through a route-group dependency is a
    `TransactionRoute`, so no session is ever left unsettled."""
    for context in iter_route_contexts(list(app.routes)):
        route = context.original_route
        if not isinstance(route, APIRoute) or isinstance(route, TransactionRoute):
            continue
        for dependency in route.dependant.dependencies:
            if isinstance(dependency.call, (KeyedService, PathService)):
                raise RuntimeError(f"{route.path} opens a session but is not a TransactionRoute")


class KeyedService(Generic[S]):
    """Route-group dependency for X-App-ID + key routes: authenticate, check the key's scope,
    rate-limit, open the request's transaction (committed before the response) and build the
    group's service. Routes using it are `TransactionRoute`s (see `api_router`)."""

    def __init__(self, build: ServiceBuilder[S], key: Literal["any", "secret"]) -> None:
        self.build = build
        self.auth = TenantAuth(key)
        # Read by kit/web/openapi.py to document the key schemes and auth problems.
        self.required_key_scope = key
        self.raises = self.auth.raises

    async def __call__(self, request: Request) -> S:
        tenant = await self.auth(request)
        container: Container = request.app.state.container
        return self.build(container, _session(request, container), tenant, request)


class PathService(Generic[S]):
    """Route-group dependency for routes that name their tenant in the path (App Store
    notifications: the signed payload is the proof, checked by the service)."""

    def __init__(self, build: ServiceBuilder[S]) -> None:
        self.build = build
        self.raises = PATH_TENANT_PROBLEMS

    async def __call__(self, request: Request, app_id: str) -> S:
        container: Container = request.app.state.container
        tenant = await tenant_from_path(request, container, app_id)
        return self.build(container, _session(request, container), tenant, request)
