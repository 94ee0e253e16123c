"""Entitlement tables expire like all user data; sources are also erased with their subject by
`app_account_token` (POST /subjects/erase)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stateless.entitlements.catalog import canonical_token
from stateless.entitlements.models import (
    EntitlementDaily,
    EntitlementEventMark,
    EntitlementSource,
    ReconcileCursor,
)

if TYPE_CHECKING:
    from stateless.kit.crypto.sealing import PrivacyKit
    from stateless.lifecycle.registry import LifecycleRegistry

SUBJECT_PURPOSE = "entitlement-subject"  # the same label as entitlements/service.py


def subject_hash(kit: PrivacyKit, app_id: str, token: str) -> str:
    """The keyed hash a source stores for its subject (canonical lowercase UUID)."""
    return kit.keyed_hash(SUBJECT_PURPOSE, app_id, canonical_token(token))


def register(registry: LifecycleRegistry) -> None:
    registry.register("entitlement_sources", EntitlementSource)
    registry.register_subject_key(
        "entitlement_sources",
        EntitlementSource.subject_hash,
        identifier="app_account_token",
        hash_of=subject_hash,
    )
    registry.register("entitlement_event_marks", EntitlementEventMark)
    registry.register("entitlement_daily", EntitlementDaily)
    registry.register("entitlement_reconcile_cursors", ReconcileCursor)
