"""The application factory. `stateless.main:app` builds the real app lazily, on first use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

from stateless import __version__, domains
from stateless.config import Settings
from stateless.container import open_container
from stateless.core.endpoints import router as core_router
from stateless.deps import API_V1
from stateless.kit.docs import install_docs
from stateless.kit.errors import install_problem_handlers
from stateless.kit.logging import configure_logging
from stateless.kit.metrics import Metrics
from stateless.kit.middleware import BodyLimitMiddleware, EdgeMiddleware
from stateless.kit.openapi import install_openapi
from stateless.tenants.cors import TenantCorsMiddleware


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.assert_safe_for_environment()
    configure_logging(settings.log_level, settings.effective_log_format)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            container = await stack.enter_async_context(open_container(settings, metrics))
            await domains.setup_services(container, stack)
            app.state.container = container
            if settings.run_background_jobs:
                for factory in domains.background_factories():
                    await stack.enter_async_context(factory(container))
            yield

    app = FastAPI(
        title="stateless-backend",
        version=__version__,
        description=(
            "A privacy-first, multi-tenant backend for iOS and web apps. Every byte of end-user "
            "data has an expiry, is invisible once expired and is deleted within about a minute."
        ),
        lifespan=lifespan,
        docs_url=None,  # kit/docs.py serves /docs and /redoc without any CDN
        redoc_url=None,
        middleware=[
            Middleware(EdgeMiddleware, metrics=metrics),
            Middleware(TenantCorsMiddleware),
            Middleware(
                BodyLimitMiddleware,
                max_bytes=settings.max_request_body_bytes,
                overrides=((f"{API_V1}/storage/uploads/", settings.max_upload_bytes),),
            ),
        ],
    )
    install_problem_handlers(app)
    app.include_router(core_router)
    for router in domains.routers():
        app.include_router(router)
    install_openapi(app)
    install_docs(app)
    return app


class _LazyApp:
    """ASGI target for servers: reads settings and builds the app on first call, not at import."""

    def __init__(self) -> None:
        self._app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


app = _LazyApp()
