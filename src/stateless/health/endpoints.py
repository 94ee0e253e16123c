"""Root, liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.responses import HTMLResponse, JSONResponse, Response

from stateless import __version__
from stateless.config import Settings
from stateless.container import Container
from stateless.deps import ContainerDep
from stateless.health.checks import dependency_checks
from stateless.kit.web.errors import NotFound, RateLimited, ServiceUnavailable, Unauthorized
from stateless.kit.web.fastroute import FastRoute
from stateless.kit.web.openapi import problems
from stateless.kit.web.problems import CODE_PATTERN, describe, render_html
from stateless.kit.web.ratelimit import HEALTH_ROUTE
from stateless.tenants.auth import enforce_rate_limit
from stateless.tenants.schemas import valid_app_id_or_none

# FastRoute: /health is the cheapest route and the one load balancers call most.
router = APIRouter(route_class=FastRoute)


class RootResponse(BaseModel):
    message: str
    version: str
    tenant: str | None


class HealthResponse(BaseModel):
    status: str
    env: str


class ReadyResponse(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/", name="root", summary="Show the service banner", response_model=RootResponse)
async def root(request: Request) -> dict[str, Any]:
    """Service banner; `tenant` echoes a well-formed X-App-ID, else null."""
    return {
        "message": "stateless-backend: every byte of user data expires",
        "version": __version__,
        "tenant": valid_app_id_or_none(request.headers.get("x-app-id")),
    }


class HealthGate:
    """Route dependency of /health: its rate limit, per X-App-ID (or per keyed-hashed client
    address when none is sent), before the handler runs."""

    raises = (RateLimited,)

    async def __call__(self, request: Request) -> Settings:
        container: Container = request.app.state.container
        app_id = valid_app_id_or_none(request.headers.get("x-app-id"))
        if app_id is not None:
            snapshot = await container.directory.get(app_id)
            overrides = snapshot.config.rate_limits if snapshot else None
            bucket = "app:" + app_id
        else:
            client = request.client.host if request.client else "unknown"
            # keyed hash: rate-limit buckets in Redis never hold a plaintext address
            bucket = "ip:" + container.privacy.keyed_hash("ratelimit-ip", "", client)[:22]
            overrides = None
        await enforce_rate_limit(request, container, bucket, overrides, route=HEALTH_ROUTE)
        return container.settings


@router.get("/health", name=HEALTH_ROUTE, summary="Check liveness", response_model=HealthResponse)
async def health(settings: Annotated[Settings, Depends(HealthGate())]) -> dict[str, str]:
    """Liveness. Limited to 10/min per X-App-ID (or per client address when none is sent)."""
    return {"status": "ok", "env": settings.environment}


@router.get(
    "/health/ready",
    name="health.ready",
    summary="Check readiness",
    response_model=ReadyResponse,
    responses=problems(ServiceUnavailable),
)
async def ready(container: ContainerDep) -> dict[str, Any]:
    """Readiness for load balancers: the database, and Redis when configured. Not rate limited."""
    checks = await dependency_checks(
        container.engine, container.redis, container.settings.db_pool_timeout + 1
    )
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        raise ServiceUnavailable(
            "Not ready: " + ", ".join(failing) + " unavailable", extra={"checks": checks}
        )
    return {"status": "ready", "checks": checks}


@router.get("/metrics", name="metrics", include_in_schema=False)
async def metrics(request: Request, container: ContainerDep) -> Response:
    token = container.settings.metrics_token
    if token:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip(), token):
            raise Unauthorized(
                "A valid metrics token is required", headers={"WWW-Authenticate": "Bearer"}
            )
    return Response(generate_latest(container.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/problems/{code}", name="problems.describe", include_in_schema=False)
async def describe_problem(code: str, request: Request) -> Response:
    """The page a problem's `type` (`/problems/<code>`) points at: HTML, or JSON when asked."""
    if not CODE_PATTERN.fullmatch(code):
        raise NotFound("No such problem type")
    page = describe(code)
    accept = request.headers.get("accept", "")
    if "json" in accept and "text/html" not in accept:
        return JSONResponse(page)
    return HTMLResponse(render_html(page))
