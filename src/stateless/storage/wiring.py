"""Builds the storage services from the app's providers (the one place this domain reads the
container); the backend itself is built by `backends.build_backend`."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from stateless.container import Container
from stateless.storage.service import SignedUrlService, StorageService
from stateless.tenants.schemas import TenantContext


def storage_service(
    container: Container, session: AsyncSession, tenant: TenantContext, base_url: str
) -> StorageService:
    """`base_url` is the request's; PUBLIC_BASE_URL wins when set."""
    settings = container.settings
    return StorageService(
        session,
        tenant,
        kit=container.privacy,
        backend=container.storage,
        policy=container.lifecycle.policy,
        max_upload_bytes=settings.max_upload_bytes,
        base_url=settings.public_base_url or base_url,
    )


def signed_url_service(container: Container) -> SignedUrlService:
    return SignedUrlService(
        sessionmaker=container.sessionmaker, kit=container.privacy, backend=container.storage
    )
