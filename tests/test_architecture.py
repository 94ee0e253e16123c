"""The rules of docs/architecture.md that a reader cannot see from one file, checked on the
source tree (no app is started)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "stateless"

# The checkpoints that may vouch for a tenant id: request authentication, and the background
# workers that read the id from their own records (queued tasks, stored object keys, the
# tenants table the entitlement reconciliation walks).
VERIFIED_APP_ID_CREATORS = {
    "tenants/auth.py",
    "bots/runner.py",
    "storage/lifecycle.py",
    "entitlements/reconcile.py",
}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        yield path.relative_to(SRC).as_posix(), ast.parse(path.read_text(), str(path))


def _imports(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_only_the_checkpoints_create_a_verified_app_id() -> None:
    creators = set()
    for name, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == "VerifiedAppId":
                creators.add(name)
    assert creators <= VERIFIED_APP_ID_CREATORS, sorted(creators - VERIFIED_APP_ID_CREATORS)
    assert "tenants/auth.py" in creators


def test_kit_imports_no_domain() -> None:
    """kit is shared mechanics: it may use the settings and itself, nothing above it."""
    for name, tree in _modules():
        if not name.startswith("kit/"):
            continue
        for module in _imports(tree):
            if module.startswith("stateless."):
                assert module.startswith(("stateless.kit", "stateless.config")), (name, module)


def _module_graph(root: Path) -> dict[str, set[str]]:
    """Dotted module -> the modules of the same tree it imports: every import counts, lazy
    ones and those under TYPE_CHECKING too (a circle drawn there is still a circle)."""
    trees: dict[str, ast.Module] = {}
    for path in sorted(root.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        trees[name] = ast.parse(path.read_text(), str(path))
    graph: dict[str, set[str]] = {}
    for name, tree in trees.items():
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        # A package's own __init__ is not an edge back from its modules.
        graph[name] = {t for t in targets if t in trees and not name.startswith(t + ".")} - {name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles() -> None:
    """No module imports, directly or through others, a module that imports it back: in the
    package and in the benchmarks. A circle is broken by moving what both need down (kit), or
    by the lower side taking a protocol instead of the upper side's type."""
    assert _circles(_module_graph(SRC)) == []
    assert _circles(_module_graph(ROOT / "bench")) == []


def test_circle_finder_finds_a_circle() -> None:
    """The check above can fail: a drawn circle is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def test_kit_rooms_are_layered() -> None:
    """kit's rooms (web, data, push, observe, crypto, wire, runtime) import each other in one
    direction only: no two rooms lean on each other."""
    rooms: dict[str, set[str]] = {}
    for name, targets in _module_graph(SRC).items():
        parts = name.split(".")
        if parts[1:2] != ["kit"] or len(parts) < 3:
            continue
        room = rooms.setdefault(parts[2], set())
        for target in targets:
            other = target.split(".")
            if other[1:2] == ["kit"] and len(other) > 2 and other[2] != parts[2]:
                room.add(other[2])
    assert {"web", "data", "push", "observe", "crypto", "wire", "runtime"} <= set(rooms)
    assert _circles(rooms) == []
    loose = sorted(p.name for p in (SRC / "kit").glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"kit modules belong in a room: {loose}"


def test_each_route_solves_flat_dependencies() -> None:
    """One dependency per route group (auth, rate limit, transaction, service), never a chain:
    FastAPI's per-request solving cost grows with every nested node."""
    from fastapi.routing import APIRoute, iter_route_contexts

    from stateless.config import Settings
    from stateless.main import create_app

    app = create_app(Settings(_env_file=None))
    nested = []
    for context in iter_route_contexts(list(app.routes)):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        for dependency in route.dependant.dependencies:
            if dependency.dependencies:
                nested.append(route.name)
    assert not nested, sorted(set(nested))


# Roles that compose (read the container and hand providers on); everything else receives them.
_COMPOSERS = ("endpoints.py", "wiring.py")
_COMPOSER_MODULES = {
    "cli.py",
    "container.py",
    "deps.py",
    "domains.py",
    "main.py",
    "tenants/auth.py",  # the request checkpoint reads the directory and the limiter
}
# The background loop and the jobs it runs: built in domains.py with the providers they use.
_BACKGROUND_JOB_MODULES = (
    "kit/runtime/background.py",
    "lifecycle/scheduler.py",
    "storage/lifecycle.py",
    "bots/runner.py",
    "entitlements/reconcile.py",
)


def test_only_composers_read_the_container() -> None:
    """Services, repositories, models and schemas take the providers they need, never the
    container; only endpoints, wiring, deps, the entry points and background jobs read it."""
    for name, tree in _modules():
        if name.endswith(_COMPOSERS) or name in _COMPOSER_MODULES:
            continue
        for module in _imports(tree):
            assert module not in ("stateless.container", "stateless.deps"), (name, module)
            assert not module.endswith(".endpoints"), (name, module)


def test_only_entry_points_import_domains() -> None:
    """domains.py is the composition root: it imports every domain, nothing imports it back."""
    for name, tree in _modules():
        if name in ("main.py", "cli.py", "domains.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "stateless":
                assert "domains" not in {alias.name for alias in node.names}, name
        assert "stateless.domains" not in set(_imports(tree)), name


def test_route_group_dependencies_are_plain_calls_settled_by_their_route() -> None:
    """No generator dependency (FastAPI's exit-stack machinery per request); every route that
    opens a session is a TransactionRoute, and the app refuses to start otherwise."""
    import inspect

    import pytest
    from fastapi import Depends, FastAPI
    from fastapi.routing import APIRoute, iter_route_contexts

    from stateless.config import Settings
    from stateless.deps import KeyedService, TransactionRoute, assert_transactional
    from stateless.main import create_app

    app = create_app(Settings(_env_file=None))
    keyed = 0
    for context in iter_route_contexts(list(app.routes)):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        for dependency in route.dependant.dependencies:
            call = dependency.call
            target = getattr(call, "__call__", call) if not inspect.isfunction(call) else call
            assert not inspect.isasyncgenfunction(target), route.path
            assert not inspect.isgeneratorfunction(target), route.path
            if isinstance(call, KeyedService):
                keyed += 1
                assert isinstance(route, TransactionRoute), route.path
    assert keyed > 20

    plain = FastAPI()

    async def endpoint(service: object = Depends(KeyedService(lambda *a: None, "any"))) -> None:
        return None

    plain.add_api_route("/unsettled", endpoint)
    with pytest.raises(RuntimeError, match="TransactionRoute"):
        assert_transactional(plain)


def test_background_jobs_take_providers_not_the_container() -> None:
    """A background job is handed the providers it uses (engine, sessionmaker, settings,
    privacy kit, metrics, ...) where the container is assembled; importing the container,
    even only for type checking, would let it reach for everything."""
    modules = dict(_modules())
    for name in _BACKGROUND_JOB_MODULES:
        imported = set(_imports(modules[name]))
        for module in ("stateless.container", "stateless.deps", "stateless.domains"):
            assert module not in imported, (name, module)
        for node in ast.walk(modules[name]):
            if isinstance(node, ast.ImportFrom) and node.module == "stateless":
                assert not {"container", "deps", "domains"} & {a.name for a in node.names}, name
