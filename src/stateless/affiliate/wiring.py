"""Builds the affiliate service from the app's providers (the one place this domain reads the
container)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from stateless.affiliate.service import AffiliateService
from stateless.container import Container
from stateless.kit.data.db import utcnow
from stateless.tenants.schemas import TenantContext


def affiliate_service(
    container: Container,
    session: AsyncSession,
    tenant: TenantContext,
    clock: Callable[[], datetime] = utcnow,
) -> AffiliateService:
    return AffiliateService(
        session,
        tenant,
        kit=container.privacy,
        keys=container.affiliate_keys,
        policy=container.lifecycle.policy,
        metrics=container.metrics,
        clock=clock,
    )
