"""The OpenAPI document says what the API really answers, errors included.

FastAPI documents only the success response and its own 422 shape (`HTTPValidationError`, as
application/json), while every error we send is an RFC 9457 problem (kit/errors.py). This
module rewrites the generated document once: a `Problem` schema, the problem statuses each
operation can answer (from its dependencies and a short table of route-specific ones), and the
two API-key headers as security schemes. Clients, docs and the fuzzer then see the same contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from stateless.kit.errors import PROBLEM_CONTENT_TYPE

PROBLEM_REF = "#/components/schemas/Problem"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details with a stable `code` and the request id.",
    "required": ["type", "title", "status", "detail", "code", "request_id"],
    "properties": {
        "type": {
            "type": "string",
            "description": "`/problems/<code>`, relative to the API's base URL: a page "
            "explaining the problem (HTML, or JSON with Accept: application/json).",
        },
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z0-9_]+$", "description": "Stable code."},
        "request_id": {"type": ["string", "null"], "description": "Also in X-Request-ID."},
        "errors": {
            "type": "array",
            "description": "Schema failures (422 validation_error only).",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

# What any route can answer: a malformed or oversized request, a body or parameter that fails
# the schema, an unexpected failure, an unreachable database.
_ANY_ROUTE = {
    400: "Malformed request (e.g. an invalid Content-Length)",
    413: "Request body over MAX_REQUEST_BODY_BYTES",
    422: "The request did not match the schema (`errors` lists where)",
    500: "Unexpected failure (quote request_id)",
    503: "The database is unavailable (Retry-After)",
}
# Routes behind the X-App-ID + API key checkpoint (tenants/auth.py).
_TENANT_ROUTE = {
    400: "Missing or malformed X-App-ID (codes missing_app_id, invalid_app_id)",
    401: "Unknown app, missing or wrong key (always the same body)",
    429: "Rate limit exceeded (Retry-After, RateLimit headers)",
}
_SECRET_ROUTE = {403: "A publishable key on a secret-key route (insufficient_scope)"}
_PATH_PARAMS = {404: "Unknown, expired or another app's id"}

# Statuses specific to a route, by route name (what its service raises).
ROUTE_PROBLEMS: dict[str, dict[int, str]] = {
    "health": {429: "Rate limit exceeded (Retry-After)"},
    "health.ready": {503: "A dependency is down (`checks` says which)"},
    "affiliate.conversion": {400: "Forged or another app's code (invalid_code)"},
    "ios.push": {
        409: "The app has no APNs key configured (apns_not_configured)",
        502: "APNs could not be reached",
    },
    "ios.validate_receipt": {502: "Apple's verifyReceipt failed (legacy receipts only)"},
    "ios.notifications": {
        400: "Unverifiable payload or bad app id; nothing recorded",
        404: "No such app (app_not_found)",
        429: "Rate limit exceeded (Retry-After)",
    },
    "storage.create": {415: "The app does not accept this content type"},
    "storage.upload": {
        403: "Bad or expired URL signature",
        404: "The object no longer exists",
        409: "Already uploaded",
        415: "Content-Type differs from the declared one",
        429: "Rate limit exceeded (Retry-After)",
    },
    "storage.download": {
        403: "Bad or expired URL signature",
        404: "The object no longer exists or has no body yet",
        429: "Rate limit exceeded (Retry-After)",
    },
    "bots.execute": {
        400: "Unknown task_type (`allowed` lists the known ones)",
        409: "Idempotency-Key reused with another body, or still in progress",
        413: "context over 1 MiB",
        422: "context does not fit the task type",
        502: "The provider failed (sanitized detail)",
        504: "Over BOT_TIMEOUT_SECONDS (task_timeout)",
    },
}


def _tenant_auth_modes(dependant: Dependant) -> set[str]:
    """The key scopes ("any", "secret") required anywhere in a route's dependency tree."""
    from stateless.tenants.auth import TenantAuth

    modes: set[str] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        if isinstance(current.call, TenantAuth):
            modes.add(current.call.required)
        stack.extend(current.dependencies)
    return modes


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }


def problems_for(route: APIRoute) -> dict[int, str]:
    """Every problem status this route can answer, with a description of each."""
    statuses = dict(_ANY_ROUTE)
    modes = _tenant_auth_modes(route.dependant)
    if modes:
        statuses.update(_TENANT_ROUTE)
    if "secret" in modes:
        statuses.update(_SECRET_ROUTE)
    if route.dependant.path_params:
        statuses.update(_PATH_PARAMS)
    if route.body_field is not None:
        statuses[415] = "The body was not sent as JSON (Content-Type: application/json)"
    if set(route.methods or ()) & {"POST", "PUT", "PATCH", "DELETE"}:
        statuses[409] = "A concurrent request wrote the same data (concurrent_write); retry"
    statuses.update(ROUTE_PROBLEMS.get(route.name, {}))
    return statuses


def _merge(responses: dict[str, Any], status: int, description: str) -> None:
    key = str(status)
    existing = responses.get(key, {})
    # A route's own description wins over ours, except FastAPI's generic 422 one.
    if existing.get("description") and existing["description"] != "Validation Error":
        description = existing["description"]
    responses[key] = _problem_response(description)


def _security(modes: set[str]) -> list[dict[str, list[str]]]:
    return [{"AppId": [], "SecretKey" if "secret" in modes else "ApiKey": []}]


def amend_openapi(schema: dict[str, Any], routes: Iterable[Any]) -> dict[str, Any]:
    """Add our problem responses and key schemes to FastAPI's generated document, in place."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = {
        "AppId": {"type": "apiKey", "in": "header", "name": "X-App-ID"},
        "ApiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "Publishable (pk_...) or secret (sk_...) key",
        },
        "SecretKey": {"type": "http", "scheme": "bearer", "description": "Secret key (sk_...)"},
    }
    paths = schema.get("paths", {})
    for context in iter_route_contexts(list(routes)):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        item = paths.get(context.path_format or route.path_format, {})
        for method in route.methods or ():
            operation = item.get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in sorted(problems_for(route).items()):
                _merge(responses, status, description)
            modes = _tenant_auth_modes(route.dependant)
            if modes:
                operation["security"] = _security(modes)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve the amended document at /openapi.json (amended once per generated document)."""
    generate = app.openapi
    amended: list[int] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if id(schema) not in amended:
            amend_openapi(schema, app.routes)
            amended[:] = [id(schema)]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
