"""Builds the email provider and the outbound HTTP client for bot tasks, once per app.

Email: SendGrid when SENDGRID_API_KEY is set, else SMTP when SMTP_URL is set, else console
(which prints each email in development).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import httpx

from stateless.email.base import EmailProvider
from stateless.email.console import ConsoleEmailProvider
from stateless.email.sendgrid import SendGridProvider
from stateless.email.smtp import SmtpProvider

if TYPE_CHECKING:
    from stateless.config import Settings
    from stateless.container import Container

SENDGRID_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
OUTBOUND_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def build_email_provider(settings: Settings) -> EmailProvider:
    if settings.sendgrid_api_key:
        client = httpx.AsyncClient(timeout=SENDGRID_TIMEOUT, follow_redirects=False)
        return SendGridProvider(settings.sendgrid_api_key, settings.sendgrid_api_base_url, client)
    if settings.smtp_url:
        return SmtpProvider(settings.smtp_url)
    # prints each email (addresses included) only in development: docs/privacy.md
    return ConsoleEmailProvider(show_content=settings.environment == "development")


async def setup(container: Container, stack: AsyncExitStack) -> None:
    provider = build_email_provider(container.settings)
    container.services["email"] = provider
    stack.push_async_callback(provider.aclose)
    # Tenant-configured targets: no proxies from the environment, no redirects.
    outbound = httpx.AsyncClient(timeout=OUTBOUND_TIMEOUT, follow_redirects=False, trust_env=False)
    container.services["bots.http"] = outbound
    stack.push_async_callback(outbound.aclose)
