"""The request checkpoint: X-App-ID + Bearer key -> TenantContext, then the route's rate limit.

Every failure to prove a key answers the same 401, so callers cannot learn which app ids exist.
"""

from __future__ import annotations

import hmac
from typing import Any, Literal

from fastapi import Request

from stateless.container import Container
from stateless.kit.data.db import utcnow
from stateless.kit.web.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ProblemError,
    RateLimited,
    Unauthorized,
)
from stateless.kit.web.ratelimit import RateLimitOutcome
from stateless.tenants.schemas import (
    APP_ID_PATTERN,
    MAX_APP_ID_LENGTH,
    TenantConfig,
    TenantContext,
    VerifiedAppId,
)
from stateless.tenants.service import hash_api_key, split_api_key
from stateless.tenants.throttle import record_failed_authentication

# One text for every failure (SPEC 2: no tenant enumeration) that still says what to send and
# where keys come from.
_UNAUTHORIZED_DETAIL = (
    "A valid app id and API key are required: send the headers X-App-ID: <app_id> and "
    "Authorization: Bearer <key>, where <key> is the app's publishable key (pk_...) or secret "
    "key (sk_...). The operator of this API issues an app's keys with "
    "`stateless tenants create <app_id>` (or `stateless tenants rotate-key <app_id>`)."
)
_KIND_BY_PREFIX: dict[str, Literal["publishable", "secret"]] = {
    "pk": "publishable",
    "sk": "secret",
}


class MissingAppId(BadRequest):
    code, title = "missing_app_id", "Missing X-App-ID"


class InvalidAppId(BadRequest):
    code, title = "invalid_app_id", "Invalid X-App-ID"


def _unauthorized() -> Unauthorized:
    return Unauthorized(_UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": "Bearer"})


def parse_app_id_header(raw: str | None) -> str:
    """Apply SPEC 2's order of checks: missing, too long, then format."""
    if raw is None or raw == "":
        raise MissingAppId("Missing X-App-ID header")
    if len(raw) > MAX_APP_ID_LENGTH:
        raise InvalidAppId(f"X-App-ID is too long (at most {MAX_APP_ID_LENGTH} characters)")
    if not APP_ID_PATTERN.fullmatch(raw):
        raise InvalidAppId("Invalid tenant ID format: use letters, digits, '-' and '_' only")
    return raw


class AppNotFound(NotFound):
    code, title = "app_not_found", "App not found"


def parse_app_id_path(app_id: str) -> str:
    """SPEC 2's app id rules, applied to a path segment."""
    if len(app_id) > MAX_APP_ID_LENGTH:
        raise InvalidAppId(f"app_id is too long (at most {MAX_APP_ID_LENGTH} characters)")
    if not APP_ID_PATTERN.fullmatch(app_id):
        raise InvalidAppId("Invalid tenant ID format: use letters, digits, '-' and '_' only")
    return app_id


# What the by-path and by-signed-URL checkpoints may answer.
PATH_TENANT_PROBLEMS: tuple[type[ProblemError], ...] = (InvalidAppId, RateLimited)


async def tenant_from_path(request: Request, container: Container, app_id: str) -> TenantContext:
    """The tenant named by the path (App Store notifications: the signed payload is the proof,
    checked by the service), rate limited like its keyed requests. An unknown app gets an empty
    configuration, so its payload fails verification exactly as a known app's foreign payload
    does (SPEC 5: the endpoint does not reveal which app ids exist)."""
    snapshot = await container.directory.get(parse_app_id_path(app_id))
    config = snapshot.config if snapshot is not None else TenantConfig()
    if snapshot is not None:
        request.state.tenant = snapshot.app_id
    await enforce_rate_limit(request, container, app_id, config.rate_limits)
    return TenantContext(
        app_id=VerifiedAppId(app_id),
        scope="publishable",
        key_id="path",
        config=config,
        secrets_sealed=snapshot.secrets_sealed if snapshot is not None else None,
    )


async def tenant_from_signed_url(
    request: Request, container: Container, app_id: str
) -> TenantContext:
    """The tenant named by a signed storage URL (the URL's MAC is the proof, checked before
    this), rate limited like its keyed requests."""
    snapshot = await container.directory.get(app_id)
    config = snapshot.config if snapshot is not None else TenantConfig()
    request.state.tenant = app_id
    await enforce_rate_limit(request, container, app_id, config.rate_limits)
    return TenantContext(
        app_id=VerifiedAppId(app_id),
        scope="publishable",
        key_id="signed-url",
        config=config,
        secrets_sealed=snapshot.secrets_sealed if snapshot is not None else None,
    )


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
    """Authenticate, check the key's scope, then apply the route's rate limit (called by the
    route-group dependency `deps.KeyedService`)."""

    def __init__(self, required: Literal["any", "secret"]) -> None:
        self.required = required
        # What this checkpoint may answer (documented by kit/web/openapi.py).
        self.raises: tuple[type[ProblemError], ...] = (
            MissingAppId,
            InvalidAppId,
            Unauthorized,
            *((Forbidden,) if required == "secret" else ()),
            RateLimited,
        )

    async def __call__(self, request: Request) -> TenantContext:
        container: Container = request.app.state.container
        try:
            tenant = await authenticate(request, container)
        except Unauthorized:  # only failures are counted; a valid key never reaches this
            await record_failed_authentication(
                request,
                request.headers.get("x-app-id"),
                settings=container.settings,
                privacy=container.privacy,
                limiter=container.limiter,
                metrics=container.metrics,
            )
            raise
        if self.required == "secret" and tenant.scope != "secret":
            raise Forbidden("This endpoint requires the secret key (sk_...)")
        await enforce_rate_limit(request, container, tenant.app_id, tenant.config.rate_limits)
        return tenant
