"""Device tokens expire like all user data: registered with the cleanup registry, and erased
with their subject by device id (POST /subjects/erase, `device_ids`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stateless.ios.models import DeviceToken
from stateless.ios.service import device_hash

if TYPE_CHECKING:
    from stateless.lifecycle.registry import LifecycleRegistry


def register(registry: LifecycleRegistry) -> None:
    registry.register("device_tokens", DeviceToken)
    registry.register_subject_key(
        "device_tokens", DeviceToken.device_hash, identifier="device_ids", hash_of=device_hash
    )
