"""Builds the process-wide APNs client (connection pools per environment) in the lifespan."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from stateless.ios.apns import ApnsClient, build_verify

if TYPE_CHECKING:
    from stateless.container import Container


async def setup(container: Container, stack: AsyncExitStack) -> None:
    settings = container.settings
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
    container.services["apns"] = client
    stack.push_async_callback(client.aclose)
