"""Web Push subscriptions expire like all user data: registered with the cleanup registry."""

from __future__ import annotations

from stateless.lifecycle.registry import LifecycleRegistry
from stateless.webpush.models import WebPushSubscription


def register(registry: LifecycleRegistry) -> None:
    registry.register("webpush_subscriptions", WebPushSubscription)
