"""Everything a request or a background job needs: one typed field per provider.

Built once per process by `stateless.domains.open_container` (web lifespan, worker, CLI and
tests alike). Services never receive the container: the endpoint or job picks the providers a
service needs and passes those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stateless.affiliate.codes import AffiliateKeyring
from stateless.config import Settings
from stateless.email.base import EmailProvider
from stateless.ios.apns import ApnsClient
from stateless.kit.crypto.receipts import DeletionReceipts
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.observe.metrics import Metrics
from stateless.kit.web.ratelimit import RateLimiter
from stateless.lifecycle.registry import LifecycleRegistry
from stateless.lifecycle.state import BackgroundState
from stateless.storage.backends import StorageBackend
from stateless.storekit.service import StoreKitProviders
from stateless.tenants.directory import TenantDirectory
from stateless.webpush.wiring import WebPushClient

if TYPE_CHECKING:
    from stateless.entitlements.flows import EntitlementProviders


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # Autocommit sessions for GET/HEAD: no BEGIN/COMMIT round trips around a single read.
    read_sessionmaker: async_sessionmaker[AsyncSession]
    # Keyed hashes and AES-GCM sealing under SECRET_KEY (kit/crypto/sealing.py).
    privacy: PrivacyKit
    metrics: Metrics
    directory: TenantDirectory
    limiter: RateLimiter
    redis: Redis | None
    # Providers, one per kind.
    lifecycle: LifecycleRegistry
    storage: StorageBackend
    email: EmailProvider
    apns: ApnsClient
    webpush: WebPushClient
    storekit: StoreKitProviders
    # Tenant-configured targets (webhooks, Mastodon): no proxies from the environment.
    outbound_http: httpx.AsyncClient
    affiliate_keys: AffiliateKeyring
    background: BackgroundState
    # Signs deletion receipts; its public keys are served at /.well-known/jwks.json.
    receipts: DeletionReceipts
    # Entitlements: the App Store Server API and Stripe gateways (entitlements/wiring.py).
    entitlements: EntitlementProviders | None = None
    # Builders of the reactions to a verified App Store notification (storekit NotificationService
    # followers), each called with (container, session, tenant); set in domains.py.
    storekit_followers: list[Callable[..., Any]] = field(default_factory=list)
