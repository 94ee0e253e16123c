"""The request checkpoint: X-App-ID + Bearer key -> TenantContext, then the route's rate limit.

Every failure to prove a key answers the same 401, so callers cannot learn which app ids exist.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import Depends, Request

from stateless.container import Container
from stateless.kit.db import utcnow
from stateless.kit.errors import BadRequest, Forbidden, RateLimited, Unauthorized
from stateless.kit.ratelimit import RateLimitOutcome
from stateless.tenants.schemas import (
    APP_ID_PATTERN,
    MAX_APP_ID_LENGTH,
    TenantContext,
    VerifiedAppId,
)
from stateless.tenants.service import hash_api_key, split_api_key
from stateless.tenants.throttle import record_failed_authentication

_UNAUTHORIZED_DETAIL = "A valid X-App-ID and API key are required"
_KIND_BY_PREFIX: dict[str, Literal["publishable", "secret"]] = {
    "pk": "publishable",
    "sk": "secret",
}


def _unauthorized() -> Unauthorized:
    return Unauthorized(_UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": "Bearer"})


def parse_app_id_header(raw: str | None) -> str:
    """Apply SPEC 2's order of checks: missing, too long, then format."""
    if raw is None or raw == "":
        raise BadRequest("Missing X-App-ID header").with_code("missing_app_id")
    if len(raw) > MAX_APP_ID_LENGTH:
        raise BadRequest(
            f"X-App-ID is too long (at most {MAX_APP_ID_LENGTH} characters)"
        ).with_code("invalid_app_id")
    if not APP_ID_PATTERN.fullmatch(raw):
        raise BadRequest(
            "Invalid tenant ID format: use letters, digits, '-' and '_' only"
        ).with_code("invalid_app_id")
    return raw


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(request: Request, container: Container) -> TenantContext:
    app_id = parse_app_id_header(request.headers.get("x-app-id"))
    token = bearer_token(request)
    snapshot = await container.directory.get(app_id)
    parsed = split_api_key(token) if token else None
    if snapshot is None or token is None or parsed is None:
        raise _unauthorized()
    prefix, key_id = parsed
    presented = hash_api_key(token)
    now = utcnow()
    matched = None
    for key in snapshot.keys:
        # compare every candidate in constant time; ids are public, hashes are not
        same = hmac.compare_digest(key.key_hash, presented)
        if same and key.key_id == key_id and key.usable_at(now):
            matched = key
    if matched is None or _KIND_BY_PREFIX[prefix] != matched.kind:
        raise _unauthorized()
    request.state.tenant = snapshot.app_id
    return TenantContext(
        app_id=VerifiedAppId(snapshot.app_id),
        scope=matched.kind,
        key_id=matched.key_id,
        config=snapshot.config,
        secrets_sealed=snapshot.secrets_sealed,
    )


def route_name(request: Request) -> str:
    route: Any = request.scope.get("route")
    name = getattr(route, "name", None)
    return name if isinstance(name, str) else "unknown"


async def enforce_rate_limit(
    request: Request,
    container: Container,
    bucket: str,
    overrides: dict[str, str] | None = None,
    route: str | None = None,
) -> None:
    """Count this request against its route's limit; raise 429 past it; headers go on any answer."""
    name = route or route_name(request)
    outcome: RateLimitOutcome | None = await container.limiter.hit(name, bucket, overrides)
    if outcome is None:
        return
    request.state.response_headers = outcome.headers()
    if not outcome.allowed:
        container.metrics.rate_limit_rejections.labels(route=name).inc()
        raise RateLimited(
            f"Rate limit for {name} exceeded; retry in {outcome.reset_seconds} s",
            headers=outcome.headers(),
        )


class TenantAuth:
    """Dependency: authenticate, check the key's scope, then apply the route's rate limit."""

    def __init__(self, required: Literal["any", "secret"]) -> None:
        self.required = required

    async def __call__(self, request: Request) -> TenantContext:
        # A route may depend on both aliases (directly and through a service): authenticate and
        # count the request once.
        tenant: TenantContext | None = getattr(request.state, "tenant_context", None)
        container: Container = request.app.state.container
        if tenant is None:
            try:
                tenant = await authenticate(request, container)
            except Unauthorized:  # only failures are counted; a valid key never reaches this
                await record_failed_authentication(
                    request, container, request.headers.get("x-app-id")
                )
                raise
            request.state.tenant_context = tenant
            if self.required == "secret" and tenant.scope != "secret":
                raise Forbidden("This endpoint requires the secret key (sk_...)")
            await enforce_rate_limit(request, container, tenant.app_id, tenant.config.rate_limits)
        elif self.required == "secret" and tenant.scope != "secret":
            raise Forbidden("This endpoint requires the secret key (sk_...)")
        return tenant


AnyKeyTenant = Annotated[TenantContext, Depends(TenantAuth("any"))]
SecretKeyTenant = Annotated[TenantContext, Depends(TenantAuth("secret"))]
