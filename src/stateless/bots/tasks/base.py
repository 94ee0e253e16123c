"""What a task type is (name, context schema, run function) and what its run function gets.

A run function returns a result dict without personal data (it is stored in the task record)
and signals failure by raising `TaskFailed` (provider refused or unreachable) or `TaskRejected`
(the request or the tenant's configuration cannot work: a 422).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.affiliate.codes import AffiliateKeyring
from stateless.config import Settings
from stateless.email.base import EmailProvider
from stateless.ios.apns import ApnsClient
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.observe.metrics import Metrics
from stateless.kit.web.errors import BadGateway, ProblemError, Unprocessable
from stateless.kit.wire.timestamps import format_timestamp
from stateless.lifecycle.registry import LifecycleRegistry
from stateless.storage.backends import StorageBackend
from stateless.storage.service import StorageService
from stateless.tenants.schemas import TenantContext, TenantSecrets
from stateless.tenants.service import open_secrets

if TYPE_CHECKING:  # webpush's sender imports bots.outbound, which imports this module
    from stateless.bots.progress import TaskJournal
    from stateless.webpush.wiring import WebPushClient

C = TypeVar("C", bound=BaseModel)


class TaskFailed(Exception):
    """The outside service failed. `detail` is shown to clients: no keys, no addresses.

    `problem`: what a synchronous run answers (a 502 `provider_error` unless the target's
    answer says the request itself is wrong); its code is also the task record's error code.
    """

    def __init__(
        self,
        detail: str,
        *,
        transient: bool = False,
        problem: type[ProblemError] = BadGateway,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.problem = problem
        self.code = problem.code


class TaskRejected(Unprocessable):
    """The task cannot run as asked (no recipient, no webhook URL configured...)."""


@dataclass(frozen=True)
class TaskProviders:
    """The providers task run functions may use, picked from the container once per app."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    kit: PrivacyKit
    metrics: Metrics
    lifecycle: LifecycleRegistry
    storage: StorageBackend
    email: EmailProvider
    apns: ApnsClient
    webpush: WebPushClient
    # Tenant-configured targets (webhooks, Mastodon).
    http: httpx.AsyncClient
    affiliate_keys: AffiliateKeyring


@dataclass
class TaskDeps:
    """What a run function may use: the providers, the tenant, and this task's identity."""

    providers: TaskProviders
    tenant: TenantContext
    task_id: str
    base_url: str
    attempt: int = 1
    # Set by the worker for a resumable run (a broadcast): where it stopped, and the journal.
    journal: TaskJournal | None = None

    @property
    def settings(self) -> Settings:
        return self.providers.settings

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.providers.sessionmaker

    def secrets(self) -> TenantSecrets:
        """The tenant's secrets, opened only by the task that needs them."""
        return open_secrets(self.providers.kit, self.tenant.app_id, self.tenant.secrets_sealed)


@dataclass(frozen=True)
class TaskType(Generic[C]):
    name: str
    context: type[C]
    run: Callable[[C, TaskDeps], Awaitable[dict[str, Any]]]
    # Optional cheap checks before anything is sent or queued (raise TaskRejected for a 422).
    prepare: Callable[[C, TaskDeps], Awaitable[None]] | None = None
    description: str = ""
    # Contexts whose run is a resumable job (a broadcast): run by the worker only, bounded by
    # PUSH_BROADCAST_MAX_SECONDS, journaled after every page, resumed after a worker restart.
    resumable: Callable[[C, Settings], bool] | None = None


async def store_task_file(
    deps: TaskDeps,
    session: AsyncSession,
    data: bytes,
    *,
    content_type: str,
    filename: str,
    ttl_seconds: int | None,
) -> dict[str, Any]:
    """Put a task's output in storage; the result names the object and a URL that expires
    with it (exports and reports alike)."""
    providers = deps.providers
    service = StorageService(
        session,
        deps.tenant,
        kit=providers.kit,
        backend=providers.storage,
        policy=providers.lifecycle.policy,
        max_upload_bytes=providers.settings.max_upload_bytes,
        base_url=providers.settings.public_base_url or deps.base_url,
    )
    stored = await service.put_bytes(
        data, content_type=content_type, filename=filename, ttl_seconds=ttl_seconds
    )
    return {
        "object_id": stored.object_id,
        "download_url": stored.download_url,
        "expires_at": format_timestamp(stored.expires_at),
        "size_bytes": stored.size_bytes,
    }
