"""Per-tenant CORS, decided by `CorsPolicy` (plain functions an edge layer can call) and applied
by `TenantCorsMiddleware`.

Who may read a response from a page on origin O:
- a request authenticated for tenant T: only if T lists O (`--cors-origin`);
- a signed storage URL (upload PUT, download GET of the local backend): only if the tenant the
  URL names lists O, whatever the answer (problems included). The tenant comes from the URL
  itself, since such URLs carry no X-App-ID;
- a problem answered before any tenant was proven (400 missing or invalid X-App-ID, 401, 404 of
  an unknown route, 405, 413, 415, 422 for malformed JSON...): if some tenant lists O, the same
  set of origins a preflight is answered for. These bodies are generic and hold no tenant data,
  every 401 is identical whether the app exists or not, and no credentials mode is ever allowed,
  so the page learns exactly what `curl` would tell anyone, and it learns *why* it failed
  instead of an opaque "Failed to fetch".
Origins no tenant lists get no CORS headers at all.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stateless.kit.web.errors import PROBLEM_CONTENT_TYPE, problem_response
from stateless.tenants.directory import TenantDirectory
from stateless.tenants.schemas import valid_app_id_or_none

ALLOWED_HEADERS = "authorization, content-type, x-app-id, x-request-id, idempotency-key"
# What a page's JavaScript may read besides the CORS-safelisted headers.
EXPOSED_HEADERS = (
    "X-Request-ID, WWW-Authenticate, Retry-After, RateLimit, RateLimit-Policy, Location, "
    "Content-Disposition"
)
ALLOWED_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
PREFLIGHT_MAX_AGE_SECONDS = 600
# The local storage backend's signed URLs: /api/v1/storage/{uploads,downloads}/{app_id}.{...}
SIGNED_URL_PREFIXES = ("/api/v1/storage/uploads/", "/api/v1/storage/downloads/")


def signed_url_app_id(path: str) -> str | None:
    """The tenant a signed storage URL names, or None for any other path.

    The signature is checked by the endpoint; here the name only picks whose origins apply. A
    forged URL naming a tenant gets that tenant's CORS on a 403 that holds nothing.
    """
    for prefix in SIGNED_URL_PREFIXES:
        if path.startswith(prefix):
            token = path[len(prefix) :]
            return valid_app_id_or_none(token.split(".", 1)[0])
    return None


def allow_origin_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
    ]


def is_problem(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").startswith(PROBLEM_CONTENT_TYPE)
    return False


class CorsPolicy:
    """The CORS decisions, given a tenant directory (cached tenant settings)."""

    def __init__(self, directory: TenantDirectory) -> None:
        self.directory = directory

    async def tenant_allows(self, app_id: str | None, origin: str) -> bool:
        valid = valid_app_id_or_none(app_id)
        if valid is None:
            return False
        snapshot = await self.directory.get(valid)
        return snapshot is not None and origin in snapshot.config.cors_origins

    async def preflight_allows(self, origin: str, path: str) -> bool:
        """A preflight carries no X-App-ID value: any tenant's origin, or the signed URL's own."""
        if any(path.startswith(prefix) for prefix in SIGNED_URL_PREFIXES):
            return await self.tenant_allows(signed_url_app_id(path), origin)
        return origin in await self.directory.cors_origins()

    def preflight_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_SECONDS).encode()),
            (b"vary", b"Origin"),
        ]

    async def request_allows(self, origin: str, path: str, app_id_header: str | None) -> bool:
        """Before the response: the tenant of a signed URL, else the X-App-ID's tenant."""
        if any(path.startswith(prefix) for prefix in SIGNED_URL_PREFIXES):
            return await self.tenant_allows(signed_url_app_id(path), origin)
        return await self.tenant_allows(app_id_header, origin)

    async def tenantless_problem_allows(self, origin: str) -> bool:
        """A problem raised before a tenant was proven: readable by any origin some tenant lists."""
        return origin in await self.directory.cors_origins()


class TenantCorsPolicy:
    """Applies CorsPolicy to a request that carries an Origin; unknown origins get no CORS
    headers. Called by the edge middleware (kit/web/middleware.py) with the rest of the app."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        origin = app_id = None
        preflight_method = False
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"x-app-id":
                app_id = value.decode("latin-1")
            elif name == b"access-control-request-method":
                preflight_method = True
        if origin is None:
            await app(scope, receive, send)
            return
        policy = CorsPolicy(scope["app"].state.container.directory)
        path: str = scope["path"]
        if scope["method"] == "OPTIONS" and preflight_method:
            if await policy.preflight_allows(origin, path):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 204,
                        "headers": policy.preflight_headers(origin),
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
            response = problem_response(
                403,
                request_id=scope.get("state", {}).get("request_id"),
                code="cors_origin_not_allowed",
                detail="This origin is not allowed by any app",
                headers={"Vary": "Origin"},
            )
            await response(scope, receive, send)
            return
        allow = await policy.request_allows(origin, path, app_id)
        # A signed URL names its tenant: only that tenant's origins may read its answers.
        tenant_known = signed_url_app_id(path) is not None

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"vary", b"Origin"))
                granted = allow
                if not granted and not tenant_known and is_problem(headers):
                    state = scope.get("state") or {}
                    # `tenant` is set once a key was proven; until then no tenant data exists.
                    if state.get("tenant") is None:
                        granted = await policy.tenantless_problem_allows(origin)
                if granted:
                    headers.extend(allow_origin_headers(origin))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_cors)
