"""Device tokens expire like all user data: registered with the cleanup registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stateless.ios.models import DeviceToken

if TYPE_CHECKING:
    from stateless.lifecycle.registry import LifecycleRegistry


def register(registry: LifecycleRegistry) -> None:
    registry.register("device_tokens", DeviceToken)
