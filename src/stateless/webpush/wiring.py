"""Builds the process-wide Web Push client (engines, retries, VAPID token cache) for the container."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from stateless.config import Settings
from stateless.webpush.crypto import VapidSigner
from stateless.webpush.sender import H2Engine, HttpcoreEngine, WebPushSender, build_ssl_context


@dataclass(frozen=True)
class WebPushClient:
    sender: WebPushSender
    signer: VapidSigner

    async def aclose(self) -> None:
        await self.sender.aclose()


async def build_webpush_client(settings: Settings) -> WebPushClient:
    # Reading CA bundles is file I/O: keep it off the event loop. Two contexts: the HTTP/2
    # clients set theirs to ALPN h2 only, httpcore offers h2 and http/1.1.
    http1_context = await asyncio.to_thread(build_ssl_context, settings.webpush_ca_file)
    h2_context = await asyncio.to_thread(build_ssl_context, settings.webpush_ca_file)
    http1 = HttpcoreEngine(
        ssl_context=http1_context,
        allow_private=settings.webpush_allow_private_networks,
        timeout_seconds=settings.webpush_timeout_seconds,
    )
    # HTTP/2 on kit/push/h2client for push services that offer it (all the big ones do), httpcore
    # for the rest.
    engine = H2Engine(
        ssl_context=h2_context,
        allow_private=settings.webpush_allow_private_networks,
        fallback=http1,
        timeout_seconds=settings.webpush_timeout_seconds,
    )
    sender = WebPushSender(engine, max_concurrency=settings.webpush_max_concurrency)
    return WebPushClient(sender, VapidSigner())
