"""Builds the process-wide Web Push client (engine, retries, VAPID token cache) in the lifespan."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stateless.webpush.crypto import VapidSigner
from stateless.webpush.sender import HttpcoreEngine, WebPushSender, build_ssl_context

if TYPE_CHECKING:
    from stateless.container import Container


@dataclass(frozen=True)
class WebPushClient:
    sender: WebPushSender
    signer: VapidSigner


async def setup(container: Container, stack: AsyncExitStack) -> None:
    settings = container.settings
    # Reading the CA bundle is file I/O: keep it off the event loop.
    ssl_context = await asyncio.to_thread(build_ssl_context, settings.webpush_ca_file)
    engine = HttpcoreEngine(
        ssl_context=ssl_context,
        allow_private=settings.webpush_allow_private_networks,
        timeout_seconds=settings.webpush_timeout_seconds,
    )
    sender = WebPushSender(engine, max_concurrency=settings.webpush_max_concurrency)
    container.services["webpush"] = WebPushClient(sender, VapidSigner())
    stack.push_async_callback(sender.aclose)
