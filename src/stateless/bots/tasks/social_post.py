"""`social_post`: publish a status on the tenant's Mastodon-compatible server.

POST {mastodon_url}/api/v1/statuses with the tenant's token and an Idempotency-Key (the task
id), so a retried attempt never posts twice. The same network policy as webhooks applies.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
import orjson
from pydantic import ConfigDict, Field

from stateless.bots.outbound import OutboundResponse, post_with_retries
from stateless.bots.tasks.base import TaskDeps, TaskFailed, TaskRejected, TaskType
from stateless.kit.wire.bounds import BoundedInput

ATTEMPTS_PER_RUN = 3
ATTEMPT_TIMEOUT_SECONDS = 15.0


class MastodonNotConfigured(TaskRejected):
    code = "mastodon_not_configured"


class SocialPostContext(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    status: str = Field(min_length=1, max_length=5000)
    visibility: Literal["public", "unlisted", "private", "direct"] | None = None
    spoiler_text: str | None = Field(default=None, max_length=500)
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    sensitive: bool | None = None


async def prepare(ctx: SocialPostContext, deps: TaskDeps) -> None:
    if not deps.tenant.config.mastodon_url or not deps.secrets().mastodon_token:
        raise MastodonNotConfigured(
            "No Mastodon server is configured for this app "
            "(stateless tenants configure --mastodon-url --mastodon-token)"
        )


async def run(ctx: SocialPostContext, deps: TaskDeps) -> dict[str, Any]:
    await prepare(ctx, deps)
    url = (deps.tenant.config.mastodon_url or "").rstrip("/") + "/api/v1/statuses"
    token = deps.secrets().mastodon_token or ""
    body = orjson.dumps(ctx.model_dump(exclude_none=True))
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Idempotency-Key": f"stateless-{deps.task_id}",
        "User-Agent": "stateless-backend/1",
    }

    def on_response(response: OutboundResponse, _attempt: int) -> dict[str, Any] | None:
        status = response.status_code
        if 200 <= status < 300:
            try:
                posted = orjson.loads(response.body)
            except orjson.JSONDecodeError:
                raise TaskFailed("the Mastodon server answered something else than JSON") from None
            return {
                "status_id": str(posted.get("id", "")),
                "url": posted.get("url") or posted.get("uri"),
                "visibility": posted.get("visibility"),
            }
        if status in (401, 403):
            raise TaskFailed(f"the Mastodon server refused the token ({status})")
        if status == 422:
            raise TaskFailed("the Mastodon server rejected the status (422)")
        if status != 429 and status < 500:
            raise TaskFailed(f"the Mastodon server refused the post ({status})")
        return None

    client: httpx.AsyncClient = deps.providers.http
    return await post_with_retries(
        client,
        url,
        body,
        headers=lambda: headers,
        on_response=on_response,
        what="the Mastodon server",
        allow_private=deps.settings.webhook_allow_private_networks,
        attempts=ATTEMPTS_PER_RUN,
        timeout_seconds=min(ATTEMPT_TIMEOUT_SECONDS, deps.settings.bot_timeout_seconds),
    )


TASK = TaskType(
    name="social_post",
    context=SocialPostContext,
    run=run,
    prepare=prepare,
    description="Post a status to the app's Mastodon-compatible server.",
)
