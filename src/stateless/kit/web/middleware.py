"""The HTTP edge: one plain ASGI middleware (no BaseHTTPMiddleware: it costs a task per
request) that does, in order, request id, CORS (the tenant policy in tenants/cors.py), body
limit, then after the app: extra response headers, metrics and the access log line. A failure
the app did not answer still gets a problem (500, or 503 for a database outage).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from typing import Any, Protocol

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stateless.kit.observe.logging import AccessLog
from stateless.kit.observe.metrics import Metrics
from stateless.kit.web.errors import (
    database_unavailable_response,
    internal_error_response,
    is_database_unavailable,
    problem_response,
)

log = structlog.get_logger("stateless.access")

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class CorsPolicy(Protocol):
    """Answers a cross-origin request: a preflight itself, else by calling `app` with the
    CORS headers added to its response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None: ...


def new_request_id() -> str:
    """A random (version 4) UUID in its usual text form, built from 16 random bytes directly:
    `str(uuid.uuid4())` costs about four times as much, most of it in the UUID class."""
    h = os.urandom(16).hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body exceeds {limit} bytes")


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        access_log: AccessLog,
        max_body_bytes: int,
        body_limit_overrides: Iterable[tuple[str, int]] = (),
        cors: CorsPolicy | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.max_body_bytes = max_body_bytes
        self.overrides = tuple(body_limit_overrides)
        self.cors = cors
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def _answer(
        self, response: ASGIApp, scope: Scope, receive: Receive, send: Send, has_origin: bool
    ) -> None:
        """A problem the app could not answer, readable by a page as its own problems are:
        through the same CORS policy (it holds no tenant data), else plain."""
        if has_origin and self.cors is not None:
            try:
                await self.cors(scope, receive, send, response)
                return
            except Exception as exc:  # the policy needs the tenant directory, maybe down too
                log.warning("cors_on_error_failed", error_type=type(exc).__name__)
        await response(scope, receive, send)

    def _series(self, method: str, route: str, status_class: int) -> tuple[Any, Any]:
        """The request counter and duration histogram children of this label set, looked up
        once: `.labels()` costs more than the increment it returns."""
        key = (method, route, status_class)
        series = self._children.get(key)
        if series is None:
            if len(self._children) > 10_000:  # methods are free text: stay bounded
                self._children.clear()
            series = self._children[key] = (
                self.metrics.requests.labels(
                    method=method, route=route, status_class=f"{status_class}xx"
                ),
                self.metrics.request_seconds.labels(route=route),
            )
        return series

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.overrides:
            if path.startswith(prefix):
                return limit
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A private copy: servers may hand every request the same lifespan state dict.
        state: dict[str, Any] = dict(scope.get("state") or {})
        scope["state"] = state
        incoming = None
        has_origin = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"origin":
                has_origin = True
        request_id = incoming if incoming and _SANE_REQUEST_ID.match(incoming) else new_request_id()
        state["request_id"] = request_id
        started = time.perf_counter()
        status_holder = [500]
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                extra = state.get("response_headers")
                if extra:
                    present = {h[0].lower() for h in headers}
                    for key, value in extra.items():
                        encoded = key.lower().encode()
                        if encoded not in present:
                            headers.append((encoded, value.encode()))
                message["headers"] = headers
            await send(message)

        try:
            if has_origin and self.cors is not None:
                await self.cors(scope, receive, send_wrapper, self._limited)
            else:
                await self._limited(scope, receive, send_wrapper)
        except Exception as exc:  # isolation boundary: every failure still answers a problem
            unavailable = is_database_unavailable(exc)
            if unavailable:
                log.warning("database_unavailable", error_type=type(exc).__name__)
            else:
                log.error(
                    "unhandled_error",
                    error_type=type(exc).__name__,
                    request_id=request_id,
                    exc_info=exc,
                )
            if not response_started:
                response = (
                    database_unavailable_response(request_id)
                    if unavailable
                    else internal_error_response(request_id)
                )
                await self._answer(response, scope, receive, send_wrapper, has_origin)
        finally:
            duration = time.perf_counter() - started
            route = route_template(scope)
            status = status_holder[0]
            count, seconds = self._series(scope["method"], route, status // 100)
            count.inc()
            seconds.observe(duration)
            self.access_log.request(
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round(duration * 1000, 2),
                tenant=state.get("tenant"),
                request_id=request_id,
            )

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """413 before the body is read when Content-Length says so, and while streaming when
        no length is sent; 400 for an unreadable Content-Length."""
        limit = self._limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    status = 413 if declared > limit else 400
                    response = problem_response(
                        status,
                        request_id=scope["state"].get("request_id"),
                        code="payload_too_large" if status == 413 else "bad_request",
                        detail=f"Request body exceeds {limit} bytes"
                        if status == 413
                        else "Invalid Content-Length",
                    )
                    await response(scope, receive, send)
                    return
                break
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)
