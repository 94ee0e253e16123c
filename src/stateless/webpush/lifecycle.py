"""Web Push subscriptions expire like all user data: registered with the cleanup registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stateless.webpush.models import WebPushSubscription

if TYPE_CHECKING:
    from stateless.container import Container
    from stateless.lifecycle.registry import LifecycleRegistry


def register(registry: LifecycleRegistry, container: Container) -> None:
    registry.register("webpush_subscriptions", WebPushSubscription)
