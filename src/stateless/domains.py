"""Where each domain plugs in, with real imports: its routers, its expiring tables, its
background jobs, and `open_container`, the one function that builds every provider for the web
lifespan, the worker, the CLI and the tests alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter
from redis.asyncio import Redis

from stateless.admin import endpoints as admin_endpoints
from stateless.affiliate import endpoints as affiliate_endpoints
from stateless.affiliate import lifecycle as affiliate_lifecycle
from stateless.affiliate.codes import AffiliateKeyring
from stateless.bots import endpoints as bots_endpoints
from stateless.bots import lifecycle as bots_lifecycle
from stateless.bots.runner import TaskWorker
from stateless.bots.wiring import build_email_provider, build_outbound_http, task_providers
from stateless.config import Settings
from stateless.container import Container
from stateless.drafts import endpoints as drafts_endpoints
from stateless.drafts import lifecycle as drafts_lifecycle
from stateless.entitlements import endpoints as entitlements_endpoints
from stateless.entitlements import lifecycle as entitlements_lifecycle
from stateless.entitlements.reconcile import ReconcileJob
from stateless.entitlements.wiring import (
    build_entitlements,
    notification_follower,
    reconcile_tenant,
)
from stateless.ios import endpoints as ios_endpoints
from stateless.ios import lifecycle as ios_lifecycle
from stateless.ios.wiring import build_apns_client
from stateless.kit.crypto.receipts import DEFAULT_ISSUER, DeletionReceipts
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import (
    build_engine,
    build_read_engine,
    build_sessionmaker,
    dispose_engines,
    open_direct,
    orm_pool_size,
)
from stateless.kit.observe.metrics import Metrics
from stateless.kit.runtime.background import BackgroundJobs, Job
from stateless.kit.web.ratelimit import RateLimiter
from stateless.lifecycle.leader import Leadership
from stateless.lifecycle.policy import TtlPolicy
from stateless.lifecycle.registry import LifecycleRegistry
from stateless.lifecycle.scheduler import CleanupScheduler
from stateless.lifecycle.state import BackgroundState
from stateless.lifecycle.wiring import cleanup_service
from stateless.storage import endpoints as storage_endpoints
from stateless.storage import lifecycle as storage_lifecycle
from stateless.storage.backends import StorageBackend, build_backend
from stateless.storage.lifecycle import OrphanSweep
from stateless.storekit import endpoints as storekit_endpoints
from stateless.storekit import lifecycle as storekit_lifecycle
from stateless.storekit.wiring import build_storekit
from stateless.subjects import endpoints as subjects_endpoints
from stateless.tenants.directory import TenantDirectory
from stateless.webpush import endpoints as webpush_endpoints
from stateless.webpush import lifecycle as webpush_lifecycle
from stateless.webpush.wiring import build_webpush_client

# FastAPI tries routes in order, every route of every router before the match: the busiest
# groups (device tokens, drafts, push) come first, admin last.
ROUTERS: list[APIRouter] = [
    ios_endpoints.router,
    drafts_endpoints.router,
    webpush_endpoints.router,
    affiliate_endpoints.router,
    bots_endpoints.router,
    storage_endpoints.router,
    storekit_endpoints.router,
    entitlements_endpoints.router,
    subjects_endpoints.router,
    entitlements_endpoints.admin_router,
    admin_endpoints.router,
]


def orphan_sweep_job(container: Container) -> Job:
    return OrphanSweep(container.storage, container.sessionmaker, container.lifecycle.policy).job()


def task_runner_job(container: Container) -> Job:
    """Run queued bot tasks while the app (or `stateless worker`) runs."""
    return TaskWorker(
        task_providers(container), container.directory, container.background.task_wakeup
    ).job()


def entitlement_reconcile_job(container: Container) -> Job:
    """Reconcile App Store entitlements every ENTITLEMENT_RECONCILE_SECONDS (leader only)."""

    async def one(session: Any, tenant: Any) -> Any:
        return await reconcile_tenant(container, session, tenant)

    return ReconcileJob(
        container.sessionmaker,
        container.directory,
        one,
        container.metrics,
        container.settings.entitlement_reconcile_seconds,
    ).job()


# Run while the app runs when RUN_BACKGROUND_JOBS is true (web process), always by the worker;
# cleanup (CleanupScheduler) runs first. Leader-only jobs share the one leader lock. Each job is
# handed the providers it uses here, never the container.
BACKGROUND_JOBS: list[Callable[[Container], Job]] = [
    orphan_sweep_job,
    task_runner_job,
    entitlement_reconcile_job,
]


def build_lifecycle(settings: Settings, storage: StorageBackend) -> LifecycleRegistry:
    """Every expiring table, with its TTL rule and what must happen before its rows go."""
    registry = LifecycleRegistry(TtlPolicy(settings.max_data_ttl_days, settings.ttl_overrides))
    drafts_lifecycle.register(registry)
    affiliate_lifecycle.register(registry)
    ios_lifecycle.register(registry)
    storekit_lifecycle.register(registry)
    storage_lifecycle.register(registry, storage)
    bots_lifecycle.register(registry)
    webpush_lifecycle.register(registry)
    entitlements_lifecycle.register(registry)
    return registry


@asynccontextmanager
async def open_container(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Container]:
    """Build every shared resource and provider, and close them all on the way out."""
    async with AsyncExitStack() as stack:
        if settings.is_sqlite:
            engine = build_engine(settings)
        else:
            engine = build_engine(settings, pool_size=orm_pool_size(settings))
        read_engine = build_read_engine(settings, engine)
        stack.push_async_callback(dispose_engines, engine, read_engine)
        direct = await open_direct(settings, engine)
        if direct is not None:
            stack.push_async_callback(direct.close)
        metrics = metrics or Metrics()
        redis = (
            Redis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
            if settings.redis_url
            else None
        )
        if redis is not None:
            stack.push_async_callback(redis.aclose)
        limiter = RateLimiter(settings, metrics)
        stack.push_async_callback(limiter.close)
        kit = PrivacyKit(settings.secret_key, settings.previous_secret_keys)
        sessionmaker = build_sessionmaker(engine, direct)
        storage = build_backend(settings, kit)
        stack.push_async_callback(storage.close)
        email = build_email_provider(settings)
        stack.push_async_callback(email.aclose)
        outbound_http = build_outbound_http()
        stack.push_async_callback(outbound_http.aclose)
        apns = await build_apns_client(settings)
        stack.push_async_callback(apns.aclose)
        webpush = await build_webpush_client(settings)
        stack.push_async_callback(webpush.aclose)
        leadership = Leadership(engine, is_sqlite=settings.is_sqlite)
        stack.push_async_callback(leadership.release)
        storekit = await build_storekit(settings, stack)
        container = Container(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            read_sessionmaker=build_sessionmaker(read_engine, direct),
            privacy=kit,
            metrics=metrics,
            directory=TenantDirectory(read_engine, settings.auth_cache_seconds),
            limiter=limiter,
            redis=redis,
            lifecycle=build_lifecycle(settings, storage),
            storage=storage,
            email=email,
            apns=apns,
            webpush=webpush,
            storekit=storekit,
            outbound_http=outbound_http,
            affiliate_keys=AffiliateKeyring(settings.affiliate_salt),
            background=BackgroundState(leadership=leadership),
            receipts=DeletionReceipts(kit, settings.public_base_url or DEFAULT_ISSUER),
        )
        container.entitlements = await build_entitlements(settings, storekit, stack)
        container.storekit_followers.append(notification_follower)
        yield container


async def start_background_jobs(container: Container, stack: AsyncExitStack) -> None:
    """Start every background job; each stops (after its current unit) when `stack` closes."""
    container.background.enabled = True
    cleanup = CleanupScheduler(
        cleanup_service(container),
        container.background.cleanup,
        container.metrics,
        container.settings.cleanup_interval_seconds,
    )
    jobs = BackgroundJobs(
        [cleanup.job(), *(build(container) for build in BACKGROUND_JOBS)],
        container.background.leadership,
        metrics=container.metrics,
        on_leadership=cleanup.on_leadership,
    )
    await stack.enter_async_context(jobs)
