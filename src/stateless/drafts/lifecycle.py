from __future__ import annotations

from typing import TYPE_CHECKING

from stateless.drafts.models import Draft

if TYPE_CHECKING:
    from stateless.lifecycle.registry import LifecycleRegistry


def register(registry: LifecycleRegistry) -> None:
    registry.register("drafts", Draft)
