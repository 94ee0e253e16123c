"""`email_campaign`: one message to many recipients with per-recipient substitutions.

Batched to the provider's per-request limit (SendGrid: 1000 personalizations per request).
`{{name}}` placeholders in subject/text/html take each recipient's `substitutions`; with a
SendGrid `template_id` the substitutions become that recipient's dynamic_template_data.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, EmailStr, Field, model_validator

from stateless.bots.tasks.base import TaskDeps, TaskRejected, TaskType
from stateless.bots.tasks.email import (
    check_template,
    drop_empty_parts,
    email_failed,
    provider_of,
    sender_of,
)
from stateless.email.base import EmailError, EmailMessage, Recipient, batches
from stateless.kit.wire.bounds import BoundedInput, FreeFormObject

MAX_CAMPAIGN_RECIPIENTS = 10_000


class NoContent(TaskRejected):
    code = "no_content"


class CampaignRecipient(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    to: EmailStr
    substitutions: dict[str, str] = Field(default_factory=dict, max_length=50)


class EmailCampaignContext(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=998)
    text: str | None = None
    html: str | None = None
    reply_to: EmailStr | None = None
    template_id: str | None = Field(default=None, min_length=1, max_length=128)
    dynamic_template_data: FreeFormObject | None = None
    recipients: list[CampaignRecipient] = Field(min_length=1, max_length=MAX_CAMPAIGN_RECIPIENTS)

    @model_validator(mode="after")
    def _content_left(self) -> EmailCampaignContext:
        drop_empty_parts(self)
        return self


async def prepare(ctx: EmailCampaignContext, deps: TaskDeps) -> None:
    if ctx.text is None and ctx.html is None and ctx.template_id is None:
        raise NoContent("A campaign needs text, html or template_id")
    check_template(ctx.template_id, deps)


async def run(ctx: EmailCampaignContext, deps: TaskDeps) -> dict[str, Any]:
    provider = provider_of(deps)
    seen: set[str] = set()
    recipients: list[Recipient] = []
    for item in ctx.recipients:
        if item.to.lower() not in seen:  # one message per address, first substitutions win
            seen.add(item.to.lower())
            recipients.append(Recipient(item.to, dict(item.substitutions)))
    groups = batches(recipients, provider.max_batch)
    ids: list[str] = []
    for number, group in enumerate(groups):
        message = EmailMessage(
            sender=sender_of(deps),
            recipients=group,
            subject=ctx.subject,
            text=ctx.text,
            html=ctx.html,
            reply_to=ctx.reply_to,
            template_id=ctx.template_id,
            dynamic_template_data=ctx.dynamic_template_data,
        )
        try:
            ids.extend(await provider.send(message))
        except EmailError as exc:
            failed = email_failed(exc, provider.name)
            if number:  # earlier batches went out: a retry would send them twice
                failed.transient = False
                failed.detail += f" (after {number} of {len(groups)} batches were sent)"
            raise failed from None
    return {
        "provider": provider.name,
        "message_ids": ids,
        "recipients": len(recipients),
        "batches": len(groups),
    }


TASK = TaskType(
    name="email_campaign",
    context=EmailCampaignContext,
    run=run,
    prepare=prepare,
    description="Send to many recipients with per-recipient substitutions, batched.",
)
