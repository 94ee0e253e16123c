"""Per-tenant CORS: preflights are answered for origins some tenant allows (a preflight carries
no X-App-ID value), actual responses only when the request's own tenant allows the origin."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stateless.kit.errors import problem_response
from stateless.tenants.schemas import valid_app_id_or_none

_ALLOWED_HEADERS = "authorization, content-type, x-app-id, x-request-id, idempotency-key"
_EXPOSED_HEADERS = "X-Request-ID, RateLimit, RateLimit-Policy, Retry-After"
_ALLOWED_METHODS = "GET, POST, PUT, DELETE, OPTIONS"


class TenantCorsPolicy:
    """Origins come from each tenant's configuration; unknown origins get no CORS headers.

    Called by the edge middleware (kit/middleware.py) with the rest of the app as `app`.
    """

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
        directory = scope["app"].state.container.directory
        if scope["method"] == "OPTIONS" and preflight_method:
            allowed = origin in await directory.cors_origins()
            headers = {"Vary": "Origin"}
            if allowed:
                headers.update(
                    {
                        "Access-Control-Allow-Origin": origin,
                        "Access-Control-Allow-Methods": _ALLOWED_METHODS,
                        "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                        "Access-Control-Max-Age": "600",
                    }
                )
            status = 204 if allowed else 403
            if allowed:
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
            else:
                response = problem_response(
                    403,
                    request_id=scope.get("state", {}).get("request_id"),
                    code="cors_origin_not_allowed",
                    detail="This origin is not allowed by any app",
                    headers=headers,
                )
                await response(scope, receive, send)
            return
        allow = False
        valid = valid_app_id_or_none(app_id)
        if valid is not None:
            snapshot = await directory.get(valid)
            allow = snapshot is not None and origin in snapshot.config.cors_origins

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"vary", b"Origin"))
                if allow:
                    headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
                    headers.append((b"access-control-expose-headers", _EXPOSED_HEADERS.encode()))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_cors)
