from __future__ import annotations

from typing import TYPE_CHECKING

from stateless.drafts.models import Draft

if TYPE_CHECKING:
    from stateless.container import Container
    from stateless.lifecycle.registry import LifecycleRegistry


def register(registry: LifecycleRegistry, container: Container) -> None:
    registry.register("drafts", Draft)
