from __future__ import annotations

from typing import TYPE_CHECKING

from stateless.storekit.models import Entitlement, NotificationReceipt

if TYPE_CHECKING:
    from stateless.lifecycle.registry import LifecycleRegistry


def register(registry: LifecycleRegistry) -> None:
    registry.register("entitlements", Entitlement)
    registry.register("notification_receipts", NotificationReceipt)
