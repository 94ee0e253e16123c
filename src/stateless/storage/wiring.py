"""Build the storage backend once per app and close it with the app."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from stateless.storage.backends import build_backend

if TYPE_CHECKING:
    from stateless.container import Container


async def setup(container: Container, stack: AsyncExitStack) -> None:
    backend = build_backend(container.settings, container.kit)
    container.services["storage"] = backend
    stack.push_async_callback(backend.close)
