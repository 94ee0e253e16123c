from __future__ import annotations

from typing import TYPE_CHECKING

from stateless.entitlements.models import (
    EntitlementDaily,
    EntitlementEventMark,
    EntitlementSource,
    ReconcileCursor,
)

if TYPE_CHECKING:
    from stateless.lifecycle.registry import LifecycleRegistry


def register(registry: LifecycleRegistry) -> None:
    registry.register("entitlement_sources", EntitlementSource)
    registry.register("entitlement_event_marks", EntitlementEventMark)
    registry.register("entitlement_daily", EntitlementDaily)
    registry.register("entitlement_reconcile_cursors", ReconcileCursor)
