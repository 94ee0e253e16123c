"""The application factory. `stateless.main:app` builds the real app lazily, on first use."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import Message, Receive, Scope, Send

from stateless import __version__, domains
from stateless.config import InvalidSettingsError, Settings, load_settings
from stateless.deps import API_V1, assert_transactional
from stateless.health.endpoints import router as health_router
from stateless.kit.observe.logging import AccessLog, configure_logging
from stateless.kit.observe.looplag import watch_loop_lag
from stateless.kit.observe.metrics import Metrics
from stateless.kit.web.dispatch import install_fast_path
from stateless.kit.web.docs import install_docs
from stateless.kit.web.errors import install_problem_handlers
from stateless.kit.web.middleware import EdgeMiddleware
from stateless.kit.web.openapi import install_openapi
from stateless.receipts.endpoints import router as receipts_router
from stateless.tenants.cors import TenantCorsPolicy


def settle_heap() -> None:
    """Move everything built at startup (modules, the app, schemas, pools) out of the cyclic
    garbage collector's sight. Those objects live as long as the process; left in the oldest
    generation, every full collection re-scans all of them, and under load those pauses were
    about a quarter of a request's CPU and most of its p99 (docs/performance.md)."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()  # InvalidSettingsError: one line, no traceback
    settings.assert_safe_for_environment()
    configure_logging(settings.log_level, settings.effective_log_format)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(watch_loop_lag(metrics))
            container = await stack.enter_async_context(domains.open_container(settings, metrics))
            app.state.container = container
            if settings.run_background_jobs:
                await domains.start_background_jobs(container, stack)
            yield

    app = FastAPI(
        title="stateless-backend",
        version=__version__,
        description=(
            "A privacy-first, multi-tenant backend for iOS and web apps. Every byte of end-user "
            "data has an expiry, is invisible once expired and is deleted within about a minute."
        ),
        lifespan=lifespan,
        # Metrics are Prometheus (/metrics) and logs our own JSON lines; FastAPI's OpenTelemetry
        # hooks would cost every request a provider lookup for exporters nobody configured.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        docs_url=None,  # kit/web/docs.py serves /docs and /redoc without any CDN
        redoc_url=None,
        middleware=[
            Middleware(
                EdgeMiddleware,
                metrics=metrics,
                access_log=AccessLog(settings.log_level, settings.effective_log_format),
                max_body_bytes=settings.max_request_body_bytes,
                body_limit_overrides=((f"{API_V1}/storage/uploads/", settings.max_upload_bytes),),
                cors=TenantCorsPolicy(),
            ),
        ],
    )
    install_problem_handlers(app)
    for router in domains.ROUTERS:
        app.include_router(router)
    # Last: API requests would otherwise try its routes first; the API groups decline a path
    # outside their prefix at once (deps.RouteGroup), so /health pays little for coming later.
    app.include_router(receipts_router)
    app.include_router(health_router)
    assert_transactional(app)
    install_fast_path(app, enabled=settings.fast_routes)
    install_openapi(app)
    install_docs(app)
    return app


class _LazyApp:
    """ASGI target for servers: reads settings and builds the app on first call, not at import.

    Once the server's lifespan startup completed, the heap built so far is settled
    (`settle_heap`). Only here: a process that builds many apps (the tests) would keep each one.
    """

    def __init__(self) -> None:
        self._app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = create_app()
            except InvalidSettingsError as exc:
                await _refuse_to_start(scope, receive, send, str(exc))
                return
        if scope["type"] != "lifespan":
            await self._app(scope, receive, send)
            return

        async def send_after_startup(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                settle_heap()
            await send(message)

        await self._app(scope, receive, send_after_startup)


async def _refuse_to_start(scope: Scope, receive: Receive, send: Send, reason: str) -> None:
    """A setting that cannot work: the server's startup fails with one line, no traceback."""
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.failed", "message": f"error: {reason}"})
        return
    raise InvalidSettingsError(reason)


app = _LazyApp()
