"""FastAPI dependencies shared by every router.

Each route group has one dependency (`KeyedService`, `PathService`) that authenticates,
rate-limits, opens the request's transaction and hands the handler its service: one call for
FastAPI to solve, no nested chains (a test keeps it so).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Generic, Literal, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.container import Container
from stateless.kit.context import TenantContext
from stateless.kit.db import session_scope
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


def _sessionmaker(request: Request, container: Container) -> async_sessionmaker[AsyncSession]:
    """Reads (GET, HEAD) run in autocommit: a lone SELECT needs no BEGIN/COMMIT around it."""
    read_only = request.method in ("GET", "HEAD")
    return container.read_sessionmaker if read_only else container.sessionmaker


class KeyedService(Generic[S]):
    """Route-group dependency for X-App-ID + key routes: authenticate, check the key's scope,
    rate-limit, open the request's transaction (committed before the response) and build the
    group's service. Use through `Depends(..., scope="function")`."""

    def __init__(self, build: ServiceBuilder[S], key: Literal["any", "secret"]) -> None:
        self.build = build
        self.auth = TenantAuth(key)
        # Read by kit/openapi.py to document the key schemes and auth problems.
        self.required_key_scope = key
        self.raises = self.auth.raises

    async def __call__(self, request: Request) -> AsyncIterator[S]:
        tenant = await self.auth(request)
        container: Container = request.app.state.container
        async with session_scope(_sessionmaker(request, container)) as session:
            yield self.build(container, session, tenant, request)


class PathService(Generic[S]):
    """Route-group dependency for routes that name their tenant in the path (App Store
    notifications: the signed payload is the proof, checked by the service)."""

    def __init__(self, build: ServiceBuilder[S]) -> None:
        self.build = build
        self.raises = PATH_TENANT_PROBLEMS

    async def __call__(self, request: Request, app_id: str) -> AsyncIterator[S]:
        container: Container = request.app.state.container
        tenant = await tenant_from_path(request, container, app_id)
        async with session_scope(_sessionmaker(request, container)) as session:
            yield self.build(container, session, tenant, request)
