from __future__ import annotations

from typing import TYPE_CHECKING

from stateless.affiliate.models import AffiliateAggregate, AffiliateEventMark

if TYPE_CHECKING:
    from stateless.lifecycle.registry import LifecycleRegistry


def register(registry: LifecycleRegistry) -> None:
    registry.register("affiliate_aggregates", AffiliateAggregate)
    registry.register("affiliate_events", AffiliateEventMark)
