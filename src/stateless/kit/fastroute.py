"""A shorter request handler for the common shape of our routes, with FastAPI's own as fallback.

FastAPI's request handler is general: per request it extracts the endpoint's source location,
parses the Content-Type with the email package, solves the dependency tree recursively (cache
keys, scope and security-scheme checks, query, header and cookie parsing for every level) and
wraps each step in telemetry hooks. Our routes have one shape: a route-group dependency that
takes only the request (it authenticates, rate-limits and hands over the service), maybe a
JSON body and path, query, header or cookie parameters, a coroutine endpoint and a response model. For that
shape `FastRoute` plans the work once per route and does, per request, the same steps in the
same order with FastAPI's own validators and serializer:

1. read the body and decode the JSON (before any dependency runs, as FastAPI does);
2. call the request-only dependencies;
3. validate path, query, header, cookie and body parameters; errors raise `RequestValidationError`;
4. call the endpoint, validate and serialize its return value through the response model.

A request outside the plain case (a body that is not JSON, a Content-Type other than JSON,
undecodable JSON, dependency overrides in place) is handed to FastAPI's handler before any
dependency has run, so every answer it gives is FastAPI's own. A route whose shape does not
fit is served by FastAPI's handler alone (`plan_for` returns None).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response, params
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, serialize_response
from fastapi.security.base import SecurityBase
from fastapi.utils import is_body_allowed_for_status_code
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _plain_json(content_type: str | None) -> bool:
    """True for the Content-Types FastAPI certainly decodes as JSON; anything unusual goes to
    FastAPI's own parsing (it accepts any application/*+json)."""
    if content_type is None:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json"


def _awaitable_call(call: Callable[..., Any]) -> bool:
    """A coroutine function, or an instance whose __call__ is one (not a class: calling a
    class builds an instance synchronously)."""
    if inspect.iscoroutinefunction(call):
        return True
    if inspect.isroutine(call) or inspect.isclass(call):
        return False
    return inspect.iscoroutinefunction(type(call).__call__)


def _request_only(dependant: Dependant) -> bool:
    """A dependency whose only parameter is the request (our route-group gates)."""
    return (
        dependant.call is not None
        and not isinstance(dependant.call, SecurityBase)
        and not dependant.dependencies
        and not dependant.path_params
        and not dependant.query_params
        and not dependant.header_params
        and not dependant.cookie_params
        and not dependant.body_params
        and dependant.request_param_name is not None
        and dependant.name is not None
        and dependant.scope is None
        and not dependant.background_tasks_param_name
        and not dependant.response_param_name
        and not dependant.security_scopes_param_name
        and not dependant.http_connection_param_name
        and not dependant.websocket_param_name
        and _awaitable_call(dependant.call)
    )


@dataclass(frozen=True)
class RoutePlan:
    """What one route needs per request, computed when the route is built."""

    gates: tuple[tuple[str, str, Callable[..., Any]], ...]  # (value name, request kwarg, call)
    endpoint: Callable[..., Coroutine[Any, Any, Any]]
    dependant: Dependant
    request_param: str | None
    route: APIRoute


def plan_for(route: APIRoute) -> RoutePlan | None:
    """The plan for `route`, or None when its shape needs FastAPI's general handler."""
    dependant = route.dependant
    call = dependant.call
    if call is None or not inspect.iscoroutinefunction(call):
        return None
    if (
        dependant.background_tasks_param_name
        or dependant.response_param_name
        or dependant.security_scopes_param_name
        or dependant.http_connection_param_name
        or dependant.websocket_param_name
        or route.response_field is None
        or route.stream_item_field is not None
        or route.is_json_stream
        or not isinstance(route.response_class, DefaultPlaceholder)
        or route.response_model_include is not None
        or route.response_model_exclude is not None
        or route.response_model_exclude_unset
        or route.response_model_exclude_defaults
        or route.response_model_exclude_none
        or not route.response_model_by_alias
    ):
        return None
    if len(dependant.body_params) > 1:
        return None  # several body fields: FastAPI assembles them into one object
    gates: list[tuple[str, str, Callable[..., Any]]] = []
    for sub in dependant.dependencies:
        if not _request_only(sub) or any(sub.call is gate[2] for gate in gates):
            return None  # FastAPI would call a repeated dependency once: leave it that
        assert sub.name is not None and sub.request_param_name is not None and sub.call
        gates.append((sub.name, sub.request_param_name, sub.call))
    return RoutePlan(tuple(gates), call, dependant, dependant.request_param_name, route)


def fast_handler(plan: RoutePlan, general: Handler) -> Handler:
    """The planned handler; `general` (FastAPI's) answers whatever the plan does not cover."""
    dependant = plan.dependant
    route = plan.route
    gates = plan.gates
    endpoint = plan.endpoint
    path_params = dependant.path_params
    query_params = dependant.query_params
    header_params = dependant.header_params
    cookie_params = dependant.cookie_params
    body_params = dependant.body_params
    request_param = plan.request_param
    response_field = route.response_field
    whole_body = None
    if len(body_params) == 1:
        info = body_params[0].field_info
        if not getattr(info, "embed", None) and not isinstance(info, params.Form):
            whole_body = body_params[0]
    status_code = route.status_code

    async def handler(request: Request) -> Response:
        # Overrides are the including app's (tests); FastAPI's handler applies them.
        if getattr(request.scope.get("app"), "dependency_overrides", None):
            return await general(request)
        body: Any = PydanticUndefined  # what FastAPI validates when no body was sent
        if body_params:
            try:
                raw = await request.body()
            except HTTPException:
                raise
            except Exception as exc:  # what FastAPI answers for an unreadable body
                raise HTTPException(400, "There was an error parsing the body") from exc
            if raw:
                if not _plain_json(request.headers.get("content-type")):
                    return await general(request)
                try:
                    body = json.loads(raw)
                except Exception:  # undecodable or too deep: FastAPI's answer, not ours
                    return await general(request)
        values: dict[str, Any] = {}
        for name, kwarg, gate in gates:
            values[name] = await gate(**{kwarg: request})
        errors: list[Any] = []
        if path_params:
            found, failed = request_params_to_args(path_params, request.path_params)
            values.update(found)
            errors += failed
        if query_params:
            found, failed = request_params_to_args(query_params, request.query_params)
            values.update(found)
            errors += failed
        if header_params:
            found, failed = request_params_to_args(header_params, request.headers)
            values.update(found)
            errors += failed
        if cookie_params:
            found, failed = request_params_to_args(cookie_params, request.cookies)
            values.update(found)
            errors += failed
        if body_params:
            if whole_body is not None and body is not PydanticUndefined:
                # one model as the whole body: what request_body_to_args does, minus its
                # per-request checks of the field's shape
                value, failed = whole_body.validate(body, {}, loc=("body",))
                values[whole_body.name] = value
            else:
                found, failed = await request_body_to_args(
                    body_fields=body_params, received_body=body, embed_body_fields=False
                )
                values.update(found)
            errors += failed
        if errors:
            raise RequestValidationError(errors, body=None if body is PydanticUndefined else body)
        if request_param is not None:
            values[request_param] = request
        returned = await endpoint(**values)
        if isinstance(returned, Response):
            return returned
        content = await serialize_response(
            field=response_field, response_content=returned, is_coroutine=True, dump_json=True
        )
        if status_code is None:
            response = Response(content=content, media_type="application/json")
        else:
            response = Response(
                content=content, media_type="application/json", status_code=status_code
            )
        if not is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        return response

    return handler


class FastRoute(APIRoute):
    """An APIRoute served by the planned handler when its shape allows (see module doc)."""

    def get_route_handler(self) -> Handler:
        general = super().get_route_handler()
        plan = plan_for(self)
        return general if plan is None else fast_handler(plan, general)
