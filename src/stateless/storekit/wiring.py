"""Builds the StoreKit providers once per app: trusted roots (file reads, off the event loop),
the JWS verifier and the HTTP client for Apple's legacy verifyReceipt."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import httpx

from stateless import __version__
from stateless.storekit.receipts import VerifyReceiptClient
from stateless.storekit.service import StoreKitProviders
from stateless.storekit.verifier import StoreKitVerifier, load_root_certificates

if TYPE_CHECKING:
    from stateless.container import Container


async def setup(container: Container, stack: AsyncExitStack) -> None:
    settings = container.settings
    roots = await asyncio.to_thread(load_root_certificates, settings.apple_root_certs_dir)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.apple_verify_receipt_timeout_seconds, connect=5.0),
        headers={"User-Agent": f"stateless-backend/{__version__}"},
        follow_redirects=False,
    )
    stack.push_async_callback(http.aclose)
    container.services["storekit"] = StoreKitProviders(
        verifier=StoreKitVerifier(roots),
        receipts=VerifyReceiptClient(
            http,
            settings.apple_verify_receipt_url,
            settings.apple_verify_receipt_sandbox_url,
        ),
    )
