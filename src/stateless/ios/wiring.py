"""Builds the process-wide APNs client (connection pools per environment) in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from stateless.ios.apns import ApnsClient, build_verify

if TYPE_CHECKING:
    from stateless.container import Container


class _DropApnsRequestLines(logging.Filter):
    """httpx logs each request's URL at INFO; APNs paths carry device tokens, and a push to
    100,000 devices would log 100,000 lines. The push service logs one summary instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if isinstance(args, tuple) and len(args) > 1 and str(record.msg).startswith("HTTP Req"):
            return "/3/device/" not in str(args[1])
        return True


def _quiet_httpx_for_apns() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _DropApnsRequestLines) for f in httpx_logger.filters):
        httpx_logger.addFilter(_DropApnsRequestLines())


async def setup(container: Container, stack: AsyncExitStack) -> None:
    settings = container.settings
    _quiet_httpx_for_apns()
    # Reading the CA bundle is file I/O: keep it off the event loop.
    verify = await asyncio.to_thread(build_verify, settings.apns_ca_file)
    client = ApnsClient(
        production_url=settings.apns_production_url,
        sandbox_url=settings.apns_sandbox_url,
        verify=verify,
        max_concurrency=settings.apns_max_concurrency,
    )
    container.services["apns"] = client
    stack.push_async_callback(client.aclose)
