"""The email provider interface every backend implements, and the message shapes it accepts.

Providers never log or raise with addresses in the text: errors carry a status and a fixed,
sanitized detail, so a task result or a problem body can quote them safely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]{1,64})\s*\}\}")


@dataclass(frozen=True, slots=True)
class Recipient:
    """One addressee; `substitutions` fill `{{name}}` placeholders for this recipient only."""

    address: str
    substitutions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """What to send. Every recipient gets an individual message: nobody sees the others."""

    sender: str
    recipients: list[Recipient]
    subject: str
    text: str | None = None
    html: str | None = None
    reply_to: str | None = None
    template_id: str | None = None
    dynamic_template_data: dict[str, Any] | None = None


class EmailError(Exception):
    """The provider refused or failed. `transient` errors may succeed when retried later."""

    def __init__(self, detail: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.status = status


class EmailProvider(Protocol):
    name: str
    max_batch: int  # recipients per provider request

    async def send(self, message: EmailMessage) -> list[str]:
        """Send to every recipient (batched as needed); one provider message id per request."""
        ...

    async def aclose(self) -> None: ...


def substitute(template: str | None, values: dict[str, str]) -> str | None:
    """Fill `{{name}}` placeholders locally (SMTP, console); unknown names stay as written."""
    if template is None or not values:
        return template
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def batches(recipients: list[Recipient], size: int) -> list[list[Recipient]]:
    return [recipients[i : i + size] for i in range(0, len(recipients), size)]
