"""Everything a request or a background job needs, built once per app in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stateless.config import Settings
from stateless.kit.crypto import PrivacyKit
from stateless.kit.db import (
    build_engine,
    build_read_engine,
    build_sessionmaker,
    dispose_engines,
)
from stateless.kit.metrics import Metrics
from stateless.kit.ratelimit import RateLimiter
from stateless.tenants.directory import TenantDirectory


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # Autocommit sessions for GET/HEAD: no BEGIN/COMMIT round trips around a single read.
    read_sessionmaker: async_sessionmaker[AsyncSession]
    kit: PrivacyKit
    metrics: Metrics
    directory: TenantDirectory
    limiter: RateLimiter
    redis: Redis | None = None
    # Domain services registered by their packages (storage backend, email provider, ...).
    services: dict[str, Any] = field(default_factory=dict)


@asynccontextmanager
async def open_container(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Container]:
    """Build every shared resource, and close them all on the way out (web, worker and CLI alike)."""
    engine = build_engine(settings)
    read_engine = build_read_engine(settings, engine)
    sessionmaker = build_sessionmaker(engine)
    read_sessionmaker = build_sessionmaker(read_engine)
    metrics = metrics or Metrics()
    redis = (
        Redis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
        if settings.redis_url
        else None
    )
    container = Container(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        read_sessionmaker=read_sessionmaker,
        kit=PrivacyKit(settings.secret_key, settings.previous_secret_keys),
        metrics=metrics,
        directory=TenantDirectory(read_engine, settings.auth_cache_seconds),
        limiter=RateLimiter(settings, metrics),
        redis=redis,
    )
    try:
        yield container
    finally:
        await container.limiter.close()
        if redis is not None:
            await redis.aclose()
        await dispose_engines(engine, read_engine)
