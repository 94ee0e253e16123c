"""`webhook`: POST an event to the tenant's registered URL, signed per Standard Webhooks.

Headers: webhook-id (stable across retries), webhook-timestamp (unix seconds) and
webhook-signature "v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>" keyed with the
base64-decoded part of the tenant's `whsec_` secret. 5xx, 408, 429 and timeouts are retried.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any

import httpx
import orjson
from pydantic import ConfigDict, Field

from stateless.bots.outbound import OutboundResponse, post_with_retries
from stateless.bots.tasks.base import TaskDeps, TaskFailed, TaskRejected, TaskType
from stateless.kit.data.db import utcnow
from stateless.kit.wire.bounds import BoundedInput, FreeFormValue
from stateless.kit.wire.timestamps import format_timestamp

ATTEMPTS_PER_RUN = 3
ATTEMPT_TIMEOUT_SECONDS = 10.0
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_RETRYABLE_4XX = {408, 425, 429}


class WebhookNotConfigured(TaskRejected):
    code = "webhook_not_configured"


class WebhookContext(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(
        default="bot.webhook", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$"
    )
    data: FreeFormValue = Field(default_factory=dict)


def signing_key(secret: str) -> bytes:
    """The bytes behind `whsec_<base64>` (standard base64; URL-safe accepted for older secrets)."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def webhook_id_of(task_id: str) -> str:
    return f"msg_{task_id}"


async def prepare(ctx: WebhookContext, deps: TaskDeps) -> None:
    if not deps.tenant.config.webhook_url:
        raise WebhookNotConfigured(
            "No webhook URL is registered for this app (stateless tenants configure --webhook-url)"
        )
    if not deps.secrets().webhook_secret:
        raise WebhookNotConfigured("This app has no webhook signing secret")


async def run(ctx: WebhookContext, deps: TaskDeps) -> dict[str, Any]:
    await prepare(ctx, deps)
    url = deps.tenant.config.webhook_url or ""
    key = signing_key(deps.secrets().webhook_secret or "")
    message_id = webhook_id_of(deps.task_id)
    body = orjson.dumps(
        {
            "type": ctx.event_type,
            "timestamp": format_timestamp(utcnow()),
            "data": ctx.data,
        }
    )

    def headers() -> dict[str, str]:
        timestamp = int(time.time())  # fresh per attempt; the id stays the same across retries
        return {
            "Content-Type": "application/json",
            "User-Agent": "stateless-backend-webhooks/1",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, message_id, timestamp, body),
        }

    def on_response(response: OutboundResponse, attempt: int) -> dict[str, Any] | None:
        status = response.status_code
        if 200 <= status < 300:
            return {"webhook_id": message_id, "status_code": status, "attempts": attempt}
        if 300 <= status < 400:
            raise TaskFailed(f"the webhook endpoint answered a redirect ({status}); not followed")
        if status < 500 and status not in _RETRYABLE_4XX:
            raise TaskFailed(f"the webhook endpoint refused the delivery ({status})")
        return None

    client: httpx.AsyncClient = deps.providers.http
    return await post_with_retries(
        client,
        url,
        body,
        headers=headers,
        on_response=on_response,
        what="the webhook endpoint",
        allow_private=deps.settings.webhook_allow_private_networks,
        attempts=ATTEMPTS_PER_RUN,
        timeout_seconds=min(ATTEMPT_TIMEOUT_SECONDS, deps.settings.bot_timeout_seconds),
    )


TASK = TaskType(
    name="webhook",
    context=WebhookContext,
    run=run,
    prepare=prepare,
    description="POST a signed event (Standard Webhooks) to the app's webhook URL.",
)
