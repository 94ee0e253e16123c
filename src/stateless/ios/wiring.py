"""Builds the process-wide APNs client (connection pools per environment) in the lifespan."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from stateless.ios.apns import ApnsClient, build_verify

if TYPE_CHECKING:
    from stateless.config import Settings


async def build_apns_client(settings: Settings) -> ApnsClient:
    # Reading the CA bundle is file I/O: keep it off the event loop.
    verify = await asyncio.to_thread(build_verify, settings.apns_ca_file)
    client = ApnsClient(
        production_url=settings.apns_production_url,
        sandbox_url=settings.apns_sandbox_url,
        verify=verify,
        max_concurrency=settings.apns_max_concurrency,
        tenant_max_concurrency=settings.apns_tenant_max_concurrency,
        timeout_seconds=settings.apns_request_timeout_seconds,
    )
    return client
