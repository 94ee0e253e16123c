"""Web Push subscriptions expire like all user data: registered with the cleanup registry, and
erased with their subject by subscriber id (POST /subjects/erase, `subscriber_ids`)."""

from __future__ import annotations

from stateless.lifecycle.registry import LifecycleRegistry
from stateless.webpush.models import WebPushSubscription
from stateless.webpush.service import subscriber_hash


def register(registry: LifecycleRegistry) -> None:
    registry.register("webpush_subscriptions", WebPushSubscription)
    registry.register_subject_key(
        "webpush_subscriptions",
        WebPushSubscription.subscriber_hash,
        identifier="subscriber_ids",
        hash_of=subscriber_hash,
    )
