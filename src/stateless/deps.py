"""FastAPI dependency aliases shared by every router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.container import Container
from stateless.kit.db import session_scope

# Routers carry the full prefix themselves, so route templates in logs and metrics are whole.
API_V1 = "/api/v1"


async def get_container(request: Request) -> Container:
    """Async on purpose: FastAPI runs plain `def` dependencies in a thread pool."""
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_session(request: Request, container: ContainerDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent. Reads (GET, HEAD)
    run in autocommit: a lone SELECT needs no BEGIN/COMMIT round trips around it."""
    read_only = request.method in ("GET", "HEAD")
    maker = container.read_sessionmaker if read_only else container.sessionmaker
    async with session_scope(maker) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
