"""Builds the process-wide Web Push client (engine, retries, VAPID token cache) in the lifespan."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stateless.webpush.crypto import VapidSigner
from stateless.webpush.sender import H2Engine, HttpcoreEngine, WebPushSender, build_ssl_context

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
    http1 = HttpcoreEngine(
        ssl_context=ssl_context,
        allow_private=settings.webpush_allow_private_networks,
        timeout_seconds=settings.webpush_timeout_seconds,
    )
    # HTTP/2 on kit/h2client for push services that offer it (all the big ones do), httpcore
    # for the rest.
    engine = H2Engine(
        ssl_context=await asyncio.to_thread(build_ssl_context, settings.webpush_ca_file),
        allow_private=settings.webpush_allow_private_networks,
        fallback=http1,
        timeout_seconds=settings.webpush_timeout_seconds,
    )
    sender = WebPushSender(engine, max_concurrency=settings.webpush_max_concurrency)
    container.services["webpush"] = WebPushClient(sender, VapidSigner())
    stack.push_async_callback(sender.aclose)
