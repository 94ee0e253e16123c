"""The OpenAPI document says what the API really answers, errors included.

FastAPI documents only the success response and its own 422 shape (`HTTPValidationError`, as
application/json), while every error we send is an RFC 9457 problem (kit/web/errors.py). This
module rewrites the generated document once: a `Problem` schema, the problem statuses each
operation can answer (the problem classes its route and dependencies declare, plus what any
route may answer), and the two API-key headers as security schemes. Clients, docs and the fuzzer then see the same contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from stateless.kit.web.errors import PROBLEM_CONTENT_TYPE, ProblemError

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


def _describe(errors: Iterable[type[ProblemError]]) -> str:
    return "; ".join(f"{error.title} (`{error.code}`)" for error in errors)


def problems(*errors: type[ProblemError]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: the problem types it may answer, by status. Routes declare the
    classes they raise; dependencies that authenticate declare theirs in a `raises` attribute."""
    grouped: dict[int, list[type[ProblemError]]] = {}
    for error in errors:
        grouped.setdefault(error.status, []).append(error)
    return {
        status: _problem_response(_describe(group)) for status, group in sorted(grouped.items())
    }


def _dependency_problems(dependant: Dependant) -> list[type[ProblemError]]:
    """The problem types the route's dependencies declare (`raises`), e.g. authentication."""
    found: list[type[ProblemError]] = []
    stack = [dependant]
    while stack:
        current = stack.pop()
        for error in getattr(current.call, "raises", ()):
            if error not in found:
                found.append(error)
        stack.extend(current.dependencies)
    return found


def _tenant_auth_modes(dependant: Dependant) -> set[str]:
    """The key scopes ("any", "secret") required anywhere in a route's dependency tree: a
    dependency that checks a key says which through its `required_key_scope` attribute."""
    modes: set[str] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        scope = getattr(current.call, "required_key_scope", None)
        if isinstance(scope, str):
            modes.add(scope)
        stack.extend(current.dependencies)
    return modes


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }


def problems_for(route: APIRoute) -> dict[int, str]:
    """The problem statuses every route of its kind can answer, and those its dependencies
    declare; the route's own (`responses=problems(...)`) are already in the document."""
    statuses = dict(_ANY_ROUTE)
    if route.body_field is not None:
        statuses[415] = "The body was not sent as JSON (Content-Type: application/json)"
    if set(route.methods or ()) & {"POST", "PUT", "PATCH", "DELETE"}:
        statuses[409] = "A concurrent request wrote the same data (`concurrent_write`); retry"
    grouped: dict[int, list[type[ProblemError]]] = {}
    for error in _dependency_problems(route.dependant):
        grouped.setdefault(error.status, []).append(error)
    for status, group in grouped.items():
        generic = statuses.get(status)
        statuses[status] = f"{_describe(group)}; {generic}" if generic else _describe(group)
    return statuses


def _merge(responses: dict[str, Any], status: int, description: str) -> None:
    key = str(status)
    existing = str(responses.get(key, {}).get("description") or "")
    # A route's own description comes first; FastAPI's generic 422 one is replaced.
    if existing and existing != "Validation Error" and description not in existing:
        description = f"{existing}; {description}"
    elif existing and existing != "Validation Error":
        description = existing
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
