"""What a task type is (name, context schema, run function) and what its run function gets.

A run function returns a result dict without personal data (it is stored in the task record)
and signals failure by raising `TaskFailed` (provider refused or unreachable) or `TaskRejected`
(the request or the tenant's configuration cannot work: a 422).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.config import Settings
from stateless.kit.errors import Unprocessable
from stateless.kit.timestamps import format_timestamp
from stateless.storage.service import StorageService
from stateless.tenants.schemas import TenantContext, TenantSecrets
from stateless.tenants.service import open_secrets

if TYPE_CHECKING:
    from stateless.container import Container

C = TypeVar("C", bound=BaseModel)


class TaskFailed(Exception):
    """The outside service failed. `detail` is shown to clients: no keys, no addresses."""

    def __init__(
        self,
        detail: str,
        *,
        transient: bool = False,
        code: str = "provider_error",
        status: int = 502,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.code = code
        self.status = status


class TaskRejected(Unprocessable):
    """The task cannot run as asked (no recipient, no webhook URL configured...)."""


@dataclass
class TaskDeps:
    """What a run function may use: the app's container, the tenant, and this task's identity."""

    container: Container
    tenant: TenantContext
    task_id: str
    base_url: str
    attempt: int = 1

    @property
    def settings(self) -> Settings:
        return self.container.settings

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.container.sessionmaker

    def secrets(self) -> TenantSecrets:
        """The tenant's secrets, opened only by the task that needs them."""
        return open_secrets(self.container.kit, self.tenant.app_id, self.tenant.secrets_sealed)


@dataclass(frozen=True)
class TaskType(Generic[C]):
    name: str
    context: type[C]
    run: Callable[[C, TaskDeps], Awaitable[dict[str, Any]]]
    # Optional cheap checks before anything is sent or queued (raise TaskRejected for a 422).
    prepare: Callable[[C, TaskDeps], Awaitable[None]] | None = None
    description: str = ""


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
    stored = await StorageService(session, deps.tenant, deps.container, deps.base_url).put_bytes(
        data, content_type=content_type, filename=filename, ttl_seconds=ttl_seconds
    )
    return {
        "object_id": stored.object_id,
        "download_url": stored.download_url,
        "expires_at": format_timestamp(stored.expires_at),
        "size_bytes": stored.size_bytes,
    }
