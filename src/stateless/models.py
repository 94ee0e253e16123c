"""Imports every model so Alembic and the cleanup registry see the whole schema."""

from stateless.affiliate.models import AffiliateAggregate, AffiliateEventMark
from stateless.bots.models import BotIdempotencyRecord, BotTask
from stateless.drafts.models import Draft
from stateless.entitlements.models import (
    EntitlementDaily,
    EntitlementEventMark,
    EntitlementSource,
    ReconcileCursor,
)
from stateless.ios.models import DeviceToken
from stateless.kit.data.db import Base
from stateless.lifecycle.models import ErasureCount
from stateless.storage.models import StoredFile
from stateless.storekit.models import Entitlement, NotificationReceipt
from stateless.tenants.models import ApiKey, Tenant
from stateless.webpush.models import WebPushSubscription

__all__ = [
    "AffiliateAggregate",
    "AffiliateEventMark",
    "ApiKey",
    "Base",
    "BotIdempotencyRecord",
    "BotTask",
    "DeviceToken",
    "Draft",
    "Entitlement",
    "EntitlementDaily",
    "EntitlementEventMark",
    "EntitlementSource",
    "ErasureCount",
    "NotificationReceipt",
    "ReconcileCursor",
    "StoredFile",
    "Tenant",
    "WebPushSubscription",
]
