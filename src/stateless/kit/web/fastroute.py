"""A shorter request handler for the common shape of our routes, with FastAPI's own as fallback.

FastAPI's request handler is general: per request it extracts the endpoint's source location,
parses the Content-Type with the email package, solves the dependency tree recursively (cache
keys, scope and security-scheme checks, query, header and cookie parsing for every level) and
wraps each step in telemetry hooks. Our routes have one shape: route-group dependencies that
take only the request (they authenticate, rate-limit and hand over the service), maybe a JSON
body and path, query, header or cookie parameters, a coroutine endpoint and a response model.
For that shape `FastRoute` plans the work once per route and inclusion and does, per request,
the same steps in the same order:

1. read the body and decode the JSON (before any dependency runs, as FastAPI does);
2. call the request-only dependencies, include-level and app-level ones first, as FastAPI does;
3. validate path, query, header, cookie and body parameters with FastAPI's validators; errors
   raise `RequestValidationError`;
4. call the endpoint, validate and serialize its return value with a `TypeAdapter` of the
   response model built when the route is planned.

The plan is made from the route as FastAPI applies it: for a route inside an included router,
the effective route FastAPI builds for that inclusion (its dependencies, response class and body
limit), never the route as declared. A route whose shape the planner does not fully understand
(any `Dependant` field it ignores set to a non-default value, `Depends(max_concurrency=...)`, a
response class, a body limit, a form body) is served by FastAPI's handler alone (`plan_for`
returns None). A request outside the plain case (a body that is not JSON, a Content-Type other
than JSON, undecodable JSON, dependency overrides in place, fast routes switched off) is handed
to FastAPI's handler before any dependency has run, so every answer it gives is FastAPI's own.

What this borrows from FastAPI and Starlette is pinned (pyproject.toml) and checked when the app
is built (`assert_supported_framework`, `assert_plans_match`): another version, a missing name
or a plan that disagrees with FastAPI's effective route refuses to start.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import json
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response, params
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security.base import SecurityBase
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# The minor versions this module (and kit/web/dispatch.py) is written against; pyproject.toml pins
# the same. Anything else refuses to start: FastAPI's internals change between minor versions.
SUPPORTED_VERSIONS: dict[str, str] = {"fastapi": "0.165", "starlette": "1.10"}

# Every FastAPI/Starlette name used here or in kit/web/dispatch.py that is not public, documented
# API, as (module, dotted attribute). `assert_supported_framework` checks each one is there.
BORROWED: tuple[tuple[str, str], ...] = (
    # FastAPI's hook that hands an included route's effective context to get_route_handler
    # (FastAPI's source marks it as temporary: "Replace or deprecate this no-scope hook").
    ("fastapi.routing", "_effective_route_context_var"),
    ("fastapi.routing", "iter_route_contexts"),
    ("fastapi.routing", "RouteContext"),
    ("fastapi.dependencies.models", "Dependant"),
    ("fastapi.dependencies.utils", "request_params_to_args"),
    ("fastapi.dependencies.utils", "request_body_to_args"),
    ("fastapi.datastructures", "DefaultPlaceholder"),
    ("fastapi._compat", "ModelField.validate"),
)

# Where a request records which handler served it (tests read it; one dict store per request):
# "planned" for the planned handler, "fastapi" for FastAPI's (a fallback, or an unplanned route).
SERVED_BY = "stateless.served_by"
PLANNED = "planned"
GENERAL = "fastapi"

# The `Dependant` fields the planner reads and honours; every other field must hold its default
# value, or the route goes to FastAPI's handler (a field added by a newer FastAPI, a concurrency
# limit, OAuth scopes, a websocket/response/background-tasks parameter ...).
_HANDLED_FIELDS = frozenset(
    {
        "path_params",
        "query_params",
        "header_params",
        "cookie_params",
        "body_params",
        "dependencies",
        "name",
        "call",
        "request_param_name",
        "path",  # only names the route in FastAPI's error messages
        "scope",
        "use_cache",  # only matters for a repeated dependency, which is never planned
    }
)


def _field_default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING  # a required field: never "default", so never planned


_IGNORED_DEFAULTS: tuple[tuple[str, Any], ...] = tuple(
    (field.name, _field_default(field))
    for field in dataclasses.fields(Dependant)
    if field.name not in _HANDLED_FIELDS
)


def _ignored_fields_default(dependant: Dependant) -> bool:
    """Every field the planner does not read holds its default value (or, like the OAuth scope
    lists FastAPI fills with [] where the default is None, an equally empty one)."""
    for name, default in _IGNORED_DEFAULTS:
        if default is dataclasses.MISSING:
            return False
        value = getattr(dependant, name, default)
        if value != default and (value or default):
            return False
    return True


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
        and _ignored_fields_default(dependant)
        and not dependant.dependencies
        and not dependant.path_params
        and not dependant.query_params
        and not dependant.header_params
        and not dependant.cookie_params
        and not dependant.body_params
        and dependant.request_param_name is not None
        and dependant.scope is None
        and _awaitable_call(dependant.call)
    )


def _body_allowed(status_code: int) -> bool:
    """FastAPI's rule (fastapi.utils.is_body_allowed_for_status_code) for a numeric status."""
    return not (status_code < 200 or status_code in {204, 205, 304})


@dataclass(frozen=True)
class Gate:
    """A request-only dependency: its value goes to the endpoint under `name` (None: FastAPI
    calls it for its effect, an include-level `dependencies=[...]` entry, and drops the value)."""

    name: str | None
    request_kwarg: str
    call: Callable[..., Any]


@dataclass(frozen=True, eq=False)
class RoutePlan:
    """What one route, as FastAPI applies it in one inclusion, needs per request."""

    gates: tuple[Gate, ...]
    endpoint: Callable[..., Coroutine[Any, Any, Any]]
    dependant: Dependant  # the effective dependant FastAPI solves for this inclusion
    request_param: str | None
    response_adapter: TypeAdapter[Any]
    status_code: int | None
    overrides_provider: Any
    # Turned off by `turn_off_plans` (Settings.fast_routes=False): one list lookup per request.
    enabled: list[bool] = dataclasses.field(default_factory=lambda: [True])


def plan_for(route: Any) -> RoutePlan | None:
    """The plan for `route` (an `APIRoute`, the effective route FastAPI builds for an inclusion,
    or a `RouteContext` of either), or None when its shape needs FastAPI's general handler."""
    dependant: Dependant | None = route.dependant
    if dependant is None:
        return None
    call = dependant.call
    if call is None or not inspect.iscoroutinefunction(call):
        return None
    if dependant.scope not in (None, "function") or not _ignored_fields_default(dependant):
        return None
    response_class = route.response_class
    if (
        route.response_field is None
        or route.stream_item_field is not None
        or route.is_json_stream
        or route.is_sse_stream
        # FastAPI answers with its own JSON bytes only for the default response class
        or not isinstance(response_class, DefaultPlaceholder)
        or response_class.value is not JSONResponse
        or route.response_model_include is not None
        or route.response_model_exclude is not None
        or route.response_model_exclude_unset
        or route.response_model_exclude_defaults
        or route.response_model_exclude_none
        or not route.response_model_by_alias
        # a body limit: FastAPI answers 413 from its own handler (the edge limits ours)
        or route.max_body_size is not None
    ):
        return None
    body_params = dependant.body_params
    if len(body_params) > 1:
        return None  # several body fields: FastAPI assembles them into one object
    if body_params and isinstance(body_params[0].field_info, params.Form):
        return None  # form bodies (and their form limits) are FastAPI's
    gates: list[Gate] = []
    for sub in dependant.dependencies:
        if not _request_only(sub) or any(sub.call is gate.call for gate in gates):
            return None  # FastAPI would call a repeated dependency once: leave it that
        assert sub.request_param_name is not None and sub.call is not None
        gates.append(Gate(sub.name, sub.request_param_name, sub.call))
    status_code = route.status_code
    return RoutePlan(
        gates=tuple(gates),
        endpoint=call,
        dependant=dependant,
        request_param=dependant.request_param_name,
        # What FastAPI's response field validates and dumps with (a TypeAdapter of the model).
        response_adapter=TypeAdapter(route.response_model),
        status_code=status_code,
        overrides_provider=route.dependency_overrides_provider,
    )


def fast_handler(plan: RoutePlan, general: Handler) -> Handler:
    """The planned handler; `general` (FastAPI's) answers whatever the plan does not cover."""
    dependant = plan.dependant
    gates = tuple((gate.name, gate.request_kwarg, gate.call) for gate in plan.gates)
    endpoint = plan.endpoint
    path_params = dependant.path_params
    query_params = dependant.query_params
    header_params = dependant.header_params
    cookie_params = dependant.cookie_params
    body_params = dependant.body_params
    request_param = plan.request_param
    validate_response = plan.response_adapter.validate_python
    dump_response = plan.response_adapter.dump_json
    provider = plan.overrides_provider
    enabled = plan.enabled
    whole_body = None
    if len(body_params) == 1:
        info = body_params[0].field_info
        if not getattr(info, "embed", None):
            whole_body = body_params[0]
    status_code = 200 if plan.status_code is None else plan.status_code
    body_allowed = _body_allowed(status_code)

    async def handler(request: Request) -> Response:
        # Overrides (tests) and the debugging switch: FastAPI's handler applies them.
        if not enabled[0] or (provider is not None and provider.dependency_overrides):
            request.scope[SERVED_BY] = GENERAL
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
                    request.scope[SERVED_BY] = GENERAL
                    return await general(request)
                try:
                    body = json.loads(raw)
                except Exception:  # undecodable or too deep: FastAPI's answer, not ours
                    request.scope[SERVED_BY] = GENERAL
                    return await general(request)
        request.scope[SERVED_BY] = PLANNED
        values: dict[str, Any] = {}
        for name, kwarg, gate in gates:
            value = await gate(**{kwarg: request})
            if name is not None:
                values[name] = value
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
        # What FastAPI's serialize_response does for the default response class.
        try:
            validated = validate_response(returned, from_attributes=True)
        except ValidationError as exc:
            raise ResponseValidationError(
                [
                    {**error, "loc": ("response", *error["loc"])}
                    for error in exc.errors(include_url=False)
                ],
                body=returned,
            ) from None
        response = Response(
            content=dump_response(validated, by_alias=True),
            media_type="application/json",
            status_code=status_code,
        )
        if not body_allowed:
            response.body = b""
        return response

    # The plan lives as long as its handler (FastRoute.built_plan_for holds it weakly).
    handler.__dict__["route_plan"] = plan
    return handler


def _effective_route_context() -> Any:
    """The effective route FastAPI is building a handler for (an included route), or None."""
    import fastapi.routing

    hook = getattr(fastapi.routing, "_effective_route_context_var", None)
    return None if hook is None else hook.get()


class FastRoute(APIRoute):
    """An APIRoute served by the planned handler when its shape allows (see module doc)."""

    _built_plans: list[weakref.ref[RoutePlan]]

    def get_route_handler(self) -> Handler:
        general = super().get_route_handler()
        # Plan from what FastAPI just built its handler from: for an included route, the
        # effective route of this inclusion (include- and app-level dependencies, response
        # class, body limit), exactly as APIRoute.get_route_handler reads it.
        effective = _effective_route_context()
        shape: Any = self
        if effective is not None and effective.original_route is self:
            shape = effective
        plan = plan_for(shape)
        if plan is None:

            async def unplanned(request: Request) -> Response:
                request.scope[SERVED_BY] = GENERAL
                return await general(request)

            return unplanned
        built = self.__dict__.setdefault("_built_plans", [])
        built[:] = [ref for ref in built if ref() is not None]
        built.append(weakref.ref(plan))
        return fast_handler(plan, general)

    def built_plan_for(self, dependant: Dependant) -> RoutePlan | None:
        """The plan this route's handler was built with for the inclusion that solves
        `dependant`, if one was planned."""
        built: list[weakref.ref[RoutePlan]] = self.__dict__.get("_built_plans", [])
        for ref in built:
            plan = ref()
            if plan is not None and plan.dependant is dependant:
                return plan
        return None


# -- startup guards ------------------------------------------------------------------------


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def assert_supported_framework(
    installed_versions: Mapping[str, str] | None = None,
    borrowed: Iterable[tuple[str, str]] = BORROWED,
) -> None:
    """Refuse to start on a FastAPI or Starlette minor version this module was not written
    against, or when a borrowed name is missing (one line, naming it). The arguments default
    to what is installed and what is borrowed (tests pass others)."""
    for package, supported in SUPPORTED_VERSIONS.items():
        if installed_versions is None:
            installed = importlib.metadata.version(package)
        else:
            installed = installed_versions[package]
        if _minor(installed) != supported:
            raise RuntimeError(
                f"{package} {installed} is installed, but stateless-backend supports only "
                f"{package} {supported}.x (kit/web/fastroute.py borrows its internals); "
                "install the versions in requirements.lock"
            )
    for module_name, dotted in borrowed:
        target: Any = importlib.import_module(module_name)
        for part in dotted.split("."):
            target = getattr(target, part, None)
            if target is None:
                raise RuntimeError(
                    f"{module_name}.{dotted} is missing from the installed FastAPI/Starlette; "
                    "kit/web/fastroute.py needs it (install the versions in requirements.lock)"
                )


def turn_off_plans(app: FastAPI) -> None:
    """`Settings.fast_routes=False`, a debugging switch: every planned handler of this app hands
    each request to FastAPI's handler."""
    for context in iter_route_contexts(list(app.routes)):
        route = context.original_route
        if isinstance(route, FastRoute):
            plan = route.built_plan_for(context.dependant)
            if plan is not None:
                plan.enabled[0] = False


def _depends_calls(dependencies: Iterable[params.Depends]) -> list[Any]:
    return [depends.dependency for depends in dependencies]


def assert_plans_match(app: FastAPI) -> int:
    """At startup: every planned route, in every inclusion, was planned from the route FastAPI
    applies there: the gates are exactly the effective dependencies (app-, include- and
    route-level), the response class is FastAPI's default and no body limit applies. Returns
    how many routes are planned; raises naming the first route that disagrees."""
    planned = 0
    for context in iter_route_contexts(list(app.routes)):
        route = context.original_route
        if not isinstance(route, FastRoute):
            continue
        dependant = context.dependant
        expected = plan_for(context)
        built = route.built_plan_for(dependant)
        where = f"{sorted(context.methods or ())} {context.path}"
        if expected is None:
            if built is not None:
                raise RuntimeError(f"{where}: planned, but FastAPI's handler must serve it")
            continue
        if built is None:
            raise RuntimeError(
                f"{where}: the planned handler was not built from FastAPI's effective route "
                "(fastapi.routing._effective_route_context_var changed?)"
            )
        effective_calls = [sub.call for sub in dependant.dependencies]
        gate_calls = [gate.call for gate in built.gates]
        declared = _depends_calls(context.dependencies)
        if (
            gate_calls != effective_calls
            or [gate.call for gate in expected.gates] != gate_calls
            or effective_calls[: len(declared)] != declared
            or not isinstance(context.response_class, DefaultPlaceholder)
            or context.max_body_size is not None
            or built.status_code != context.status_code
            or built.overrides_provider is not context.dependency_overrides_provider
        ):
            raise RuntimeError(
                f"{where}: the planned handler disagrees with FastAPI's effective route "
                f"(dependencies {gate_calls!r} vs {effective_calls!r}, "
                f"response class {context.response_class!r}, "
                f"body limit {context.max_body_size!r})"
            )
        planned += 1
    if getattr(app, "max_body_size", None) is not None and planned:
        raise RuntimeError("an app-level max_body_size is set: the planned handler answers 400")
    return planned
