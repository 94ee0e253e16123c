"""Builds the cleanup service from the app's container (the one place the lifecycle room reads
it), for the cleanup job, `POST /admin/cleanup` and `stateless cleanup` alike."""

from __future__ import annotations

from stateless.container import Container
from stateless.lifecycle.cleanup import CleanupService


def cleanup_service(container: Container) -> CleanupService:
    settings = container.settings
    return CleanupService(
        container.sessionmaker,
        container.lifecycle,
        container.metrics,
        settings.cleanup_batch_size,
        is_sqlite=settings.is_sqlite,
        hook_batch_size=settings.cleanup_hook_batch_size,
    )
