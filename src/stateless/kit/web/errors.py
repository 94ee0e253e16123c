"""Domain errors carry their HTTP status; one renderer turns every error into RFC 9457 problem+json."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from stateless.kit.web.media import unsupported_body_detail
from stateless.kit.web.problems import CATALOGUE

PROBLEM_CONTENT_TYPE = "application/problem+json"
# A relative reference: it resolves against the API's own base URL to a page this app serves
# (GET /problems/<code>, kit/web/problems.py), whatever host or proxy the API is reached through.
PROBLEM_TYPE_BASE = "/problems/"

log = structlog.get_logger("stateless.errors")


# RFC 9457: a title summarises its problem type and does not change between occurrences. The
# first class that names a code with a title fixes that code's title; a class naming the same
# code again (a subclass of another status family, say) gets it too, and a class naming a code
# without a title reads as its words ("webhook_not_configured" -> "Webhook not configured").
_TITLES: dict[str, str] = {}


def title_for(code: str) -> str:
    """The one title of a problem code: its page's (kit/web/problems.py), else its class's."""
    doc = CATALOGUE.get(code)
    title = doc.title if doc else _TITLES.get(code)
    if title is None:
        words = code.replace("_", " ").strip()
        title = words[:1].upper() + words[1:] if words else "Error"
    return title


class ProblemError(Exception):
    """Base for every error a client may see. Each problem type is one subclass that sets its
    status, code and title (a new code is a new class); routes list the classes they may
    raise (`kit.web.openapi.problems`) and the OpenAPI document is derived from that. A code has
    one title wherever it is raised (see title_for)."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            return
        if "title" in cls.__dict__ and cls.code not in _TITLES:
            _TITLES[cls.code] = cls.title
        cls.title = title_for(cls.code)

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(self.detail)


class BadRequest(ProblemError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(ProblemError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class Forbidden(ProblemError):
    status, code, title = 403, "insufficient_scope", "Insufficient scope"


class NotFound(ProblemError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ProblemError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ProblemError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedBodyMediaType(ProblemError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class Unprocessable(ProblemError):
    status, code, title = 422, "validation_error", "Validation error"


class RateLimited(ProblemError):
    status, code, title = 429, "rate_limited", "Too many requests"


class BadGateway(ProblemError):
    status, code, title = 502, "provider_error", "Upstream provider failed"


class ServiceUnavailable(ProblemError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


class GatewayTimeout(ProblemError):
    status, code, title = 504, "timeout", "Timed out"


_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "provider_error",
    503: "service_unavailable",
    504: "timeout",
}


def request_id_of(scope: Mapping[str, Any]) -> str | None:
    state = scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else None


def problem_body(
    status: int,
    *,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    request_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    code = code or _CODES_BY_STATUS.get(status, "error")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title or phrase,
        "status": status,
        "detail": detail or title or phrase,
        "code": code,
        "request_id": request_id,
    }
    if extra:
        body.update(extra)
    return body


def problem_response(
    status: int,
    *,
    request_id: str | None,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    body = problem_body(
        status, code=code, title=title, detail=detail, request_id=request_id, extra=extra
    )
    return Response(
        content=orjson.dumps(body),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=dict(headers or {}),
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Keep location, message and type; never echo the submitted value back."""
    errors = []
    for error in exc.errors():
        errors.append(
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return errors


async def _handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status,
        request_id=request_id_of(request.scope),
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _handle_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    wrong_media_type = unsupported_body_detail(request, exc)
    if wrong_media_type is not None:
        return await _handle_problem(request, UnsupportedBodyMediaType(wrong_media_type))
    return problem_response(
        422,
        request_id=request_id_of(request.scope),
        code="validation_error",
        title="Validation error",
        detail="The request did not match the expected schema",
        extra={"errors": _validation_errors(exc)},
    )


async def _handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(
        exc.status_code,
        request_id=request_id_of(request.scope),
        detail=detail,
        headers=exc.headers,
    )


# SQLSTATEs that mean "the server cannot take this connection now": connection exceptions (08),
# shutting down (57P01/57P02), still starting up or recovering (57P03), too many connections.
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def _unavailable_sqlstate(error: object) -> bool:
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


def database_unavailable_response(request_id: str | None) -> Response:
    return problem_response(
        503,
        request_id=request_id,
        code="database_unavailable",
        title="Service unavailable",
        detail="The database is not reachable right now; retry shortly",
        headers={"Retry-After": "5"},
    )


def internal_error_response(request_id: str | None) -> Response:
    """What every unexpected failure looks like: no type, no message, just the request id."""
    return problem_response(
        500,
        request_id=request_id,
        code="internal_error",
        title="Internal server error",
        detail="An unexpected error occurred; quote the request id when reporting it",
    )


def _raised_in_database_driver(exc: BaseException) -> bool:
    """Whether the error, or what caused it, came out of the driver. The chain counts: a
    timeout shared with requests waiting on the same lookup (the tenant directory hands one
    load's outcome to every waiter) reaches them with their own frames only, its cause (the
    driver's cancelled connect) still says where it came from."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            module = str(tb.tb_frame.f_globals.get("__name__", ""))
            if module.startswith(("asyncpg.", "sqlalchemy.")):
                return True
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return False


def is_database_unavailable(exc: BaseException) -> bool:
    """Connection-level database failures (server down, restarting or not answering, pool
    exhausted, link dropped)."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.TimeoutError):  # pool checkout timed out
        return True
    # asyncpg's connect/command timeouts escape SQLAlchemy as the builtin TimeoutError (a server
    # that accepts TCP but does not answer); only those raised inside the driver count here.
    if isinstance(exc, TimeoutError) and _raised_in_database_driver(exc):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa_exc.InterfaceError):
            return True
        if isinstance(exc, sa_exc.OperationalError):
            return True
        cause = exc.orig
        if _unavailable_sqlstate(cause):  # e.g. "the database system is starting up"
            return True
        name = type(cause).__name__ if cause is not None else ""
        return "Connection" in name or "CannotConnect" in name or isinstance(cause, OSError)
    return (
        isinstance(exc, (ConnectionRefusedError, ConnectionResetError))
        or (type(exc).__module__.startswith("asyncpg") and "Connection" in type(exc).__name__)
        or _unavailable_sqlstate(exc)
    )


# Text Postgres cannot hold (a NUL character, bytes not in the encoding): the client's value,
# not our fault, whichever route it reached the database through (a path id, say).
_UNSTORABLE_TEXT_SQLSTATES = ("22021", "22P05")


def _unstorable_text(exc: BaseException) -> bool:
    cause = getattr(exc, "orig", None)
    for error in (cause, getattr(cause, "__cause__", None)):
        if getattr(error, "sqlstate", None) in _UNSTORABLE_TEXT_SQLSTATES:
            return True
    return False


async def _handle_database_unavailable(request: Request, exc: Exception) -> Response:
    if _unstorable_text(exc):
        log.warning("unstorable_text", error_type=type(exc).__name__)
        return problem_response(
            422,
            request_id=request_id_of(request.scope),
            code="validation_error",
            title="Validation error",
            detail="The request holds text that cannot be stored (a NUL character, for one)",
        )
    if not is_database_unavailable(exc):
        return await _handle_unexpected(request, exc)
    log.warning("database_unavailable", error_type=type(exc).__name__)
    return database_unavailable_response(request_id_of(request.scope))


async def _handle_integrity(request: Request, exc: Exception) -> Response:
    """A unique or foreign key violation that escaped a service: two requests wrote the same
    thing at the same moment (a check-then-insert lost the race). Retrying is the right move."""
    log.warning("concurrent_write", error_type=type(exc).__name__)
    return problem_response(
        409,
        request_id=request_id_of(request.scope),
        code="concurrent_write",
        title="Conflict",
        detail="A concurrent request wrote the same data; retry the request",
        headers={"Retry-After": "1"},
    )


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return internal_error_response(request_id_of(request.scope))


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _handle_problem)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    from sqlalchemy import exc as sa_exc

    for db_error in (sa_exc.DBAPIError, sa_exc.TimeoutError, ConnectionRefusedError, OSError):
        app.add_exception_handler(db_error, _handle_database_unavailable)
    app.add_exception_handler(sa_exc.IntegrityError, _handle_integrity)
    # No catch-all here: anything else reaches the edge middleware (kit/web/middleware.py), which
    # answers the 500 problem and logs it.
