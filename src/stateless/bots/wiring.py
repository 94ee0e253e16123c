"""Builds the bot service and task providers from the app's container, and the email provider
and outbound HTTP client once per app.

Email: SendGrid when SENDGRID_API_KEY is set, else SMTP when SMTP_URL is set, else console
(which prints each email in development).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.bots.service import BotService
from stateless.bots.tasks.base import TaskProviders
from stateless.container import Container
from stateless.email.base import EmailProvider
from stateless.email.console import ConsoleEmailProvider
from stateless.email.sendgrid import SendGridProvider
from stateless.email.smtp import SmtpProvider
from stateless.tenants.schemas import TenantContext

if TYPE_CHECKING:
    from stateless.config import Settings

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


def build_outbound_http() -> httpx.AsyncClient:
    """Tenant-configured targets: no proxies from the environment, no redirects."""
    return httpx.AsyncClient(timeout=OUTBOUND_TIMEOUT, follow_redirects=False, trust_env=False)


def task_providers(container: Container) -> TaskProviders:
    """The providers bot tasks may use, picked from the app's container."""
    return TaskProviders(
        settings=container.settings,
        sessionmaker=container.sessionmaker,
        kit=container.privacy,
        metrics=container.metrics,
        lifecycle=container.lifecycle,
        storage=container.storage,
        email=container.email,
        apns=container.apns,
        webpush=container.webpush,
        http=container.outbound_http,
        affiliate_keys=container.affiliate_keys,
    )


def bot_service(
    container: Container,
    tenant: TenantContext,
    base_url: str,
    session: AsyncSession | None = None,
) -> BotService:
    return BotService(
        tenant,
        base_url,
        providers=task_providers(container),
        wakeup=container.background.task_wakeup,
        session=session,
    )
