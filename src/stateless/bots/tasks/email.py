"""`email`: one message to one or more recipients (default: the tenant's notify address)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from pydantic import ConfigDict, EmailStr, Field, model_validator

from stateless.bots.tasks.base import TaskDeps, TaskFailed, TaskRejected, TaskType
from stateless.email.base import EmailError, EmailMessage, EmailProvider, Recipient
from stateless.kit.wire.bounds import BoundedInput, FreeFormObject

MAX_RECIPIENTS = 50  # larger audiences belong in email_campaign


class TemplateUnsupported(TaskRejected):
    code = "template_unsupported"


class NoRecipient(TaskRejected):
    code = "no_recipient"


class EmailContext(BoundedInput):
    model_config = ConfigDict(extra="forbid")

    to: (
        EmailStr | Annotated[list[EmailStr], Field(min_length=1, max_length=MAX_RECIPIENTS)] | None
    ) = None
    subject: str = Field(min_length=1, max_length=998)
    text: str | None = None
    html: str | None = None
    reply_to: EmailStr | None = None
    template_id: str | None = Field(default=None, min_length=1, max_length=128)
    dynamic_template_data: FreeFormObject | None = None

    @model_validator(mode="after")
    def _content_left(self) -> EmailContext:
        drop_empty_parts(self)
        return self


class MessageParts(Protocol):
    """What an email and a campaign body share (email_campaign builds on this module)."""

    text: str | None
    html: str | None
    template_id: str | None


def drop_empty_parts(ctx: MessageParts) -> None:
    """Empty `text` / `html` parts are left out (providers refuse empty content); sent parts
    that were all empty, with no template, leave nothing to send: a 422."""
    sent = ctx.text is not None or ctx.html is not None
    ctx.text = ctx.text or None
    ctx.html = ctx.html or None
    if sent and ctx.text is None and ctx.html is None and ctx.template_id is None:
        raise ValueError("text and html are empty: give non-empty content or a template_id")


def provider_of(deps: TaskDeps) -> EmailProvider:
    provider: EmailProvider = deps.providers.email
    return provider


def sender_of(deps: TaskDeps) -> str:
    return deps.tenant.config.email_from or deps.settings.email_from


def check_template(template_id: str | None, deps: TaskDeps) -> None:
    if template_id and provider_of(deps).name != "sendgrid":
        raise TemplateUnsupported(
            "template_id needs the SendGrid email provider (SENDGRID_API_KEY)"
        )


def email_failed(exc: EmailError, provider: str) -> TaskFailed:
    return TaskFailed(f"{provider}: {exc.detail}", transient=exc.transient)


def _recipients(ctx: EmailContext, deps: TaskDeps) -> list[str]:
    if ctx.to is None:
        notify = deps.secrets().notify_email
        return [notify] if notify else []
    return [ctx.to] if isinstance(ctx.to, str) else list(dict.fromkeys(ctx.to))


async def prepare(ctx: EmailContext, deps: TaskDeps) -> None:
    if not _recipients(ctx, deps):
        raise NoRecipient(
            "No recipient: give `to`, or configure the app's notify address "
            "(stateless tenants configure --notify-email)"
        )
    check_template(ctx.template_id, deps)


async def run(ctx: EmailContext, deps: TaskDeps) -> dict[str, Any]:
    recipients = _recipients(ctx, deps)
    if not recipients:
        raise NoRecipient("No recipient")
    provider = provider_of(deps)
    text = ctx.text
    if text is None and ctx.html is None and ctx.template_id is None:
        text = ctx.subject  # {"subject": "Test"} alone is a valid email
    message = EmailMessage(
        sender=sender_of(deps),
        recipients=[Recipient(address) for address in recipients],
        subject=ctx.subject,
        text=text,
        html=ctx.html,
        reply_to=ctx.reply_to,
        template_id=ctx.template_id,
        dynamic_template_data=ctx.dynamic_template_data,
    )
    try:
        ids = await provider.send(message)
    except EmailError as exc:
        raise email_failed(exc, provider.name) from None
    return {
        "provider": provider.name,
        "message_id": ids[0] if ids else None,
        "message_ids": ids,
        "recipients": len(recipients),
    }


TASK = TaskType(
    name="email",
    context=EmailContext,
    run=run,
    prepare=prepare,
    description="Send one email (to defaults to the app's notify address).",
)
