"""Where each domain plugs in: one list per hook, read by create_app, the worker and the CLI.

- ROUTERS: modules exposing `router` (an APIRouter carrying its full /api/v1/... prefix).
- LIFECYCLE: modules exposing `register(registry, container)` for their expiring tables.
- SERVICES: modules exposing `async setup(container, stack)` that build providers (storage
  backend, email, APNs client...) into `container.services` and push their cleanup on `stack`.
- BACKGROUND: "module:function" async context manager factories taking the container, run when
  RUN_BACKGROUND_JOBS is true (web process) and always by `stateless worker`.
"""

from __future__ import annotations

import importlib
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stateless.container import Container

ROUTERS: list[str] = [
    "stateless.drafts.endpoints",
    "stateless.admin.endpoints",
    "stateless.affiliate.endpoints",
    "stateless.ios.endpoints",
    "stateless.storekit.endpoints",
    "stateless.storage.endpoints",
    "stateless.bots.endpoints",
    "stateless.webpush.endpoints",
]

LIFECYCLE: list[str] = [
    "stateless.drafts.lifecycle",
    "stateless.affiliate.lifecycle",
    "stateless.ios.lifecycle",
    "stateless.storekit.lifecycle",
    "stateless.storage.lifecycle",
    "stateless.bots.lifecycle",
    "stateless.webpush.lifecycle",
]

SERVICES: list[str] = [
    "stateless.affiliate.wiring",
    "stateless.ios.wiring",
    "stateless.storekit.wiring",
    "stateless.storage.wiring",
    "stateless.bots.wiring",
    "stateless.webpush.wiring",
]

BACKGROUND: list[str] = [
    "stateless.lifecycle.scheduler:run_cleanup_loop",
    "stateless.storage.lifecycle:run_orphan_sweep",
    "stateless.bots.runner:run_task_loop",
]


def routers() -> list[Any]:
    return [importlib.import_module(name).router for name in ROUTERS]


def lifecycle_registrations() -> list[Any]:
    return [importlib.import_module(name).register for name in LIFECYCLE]


def background_factories() -> list[Any]:
    factories = []
    for target in BACKGROUND:
        module_name, _, attr = target.partition(":")
        factories.append(getattr(importlib.import_module(module_name), attr))
    return factories


async def setup_services(container: Container, stack: AsyncExitStack) -> None:
    """Register the lifecycle registry first (others hook into it), then each domain's providers."""
    from stateless.lifecycle.registry import default_registry

    container.services["lifecycle"] = default_registry(container)
    for name in SERVICES:
        await importlib.import_module(name).setup(container, stack)
