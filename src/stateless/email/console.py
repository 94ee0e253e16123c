"""Development backend: nothing leaves the machine; in development it prints each email.

`make run` uses it when neither SENDGRID_API_KEY nor SMTP_URL is set, so a newcomer can see
what an email task sends. Printing addresses is a deliberate exception to "no PII in logs"
(docs/privacy.md): only with ENVIRONMENT=development, straight to stdout, never through the
log pipeline. In any other environment it logs a recipient count and a reference, as before.
"""

from __future__ import annotations

import json
import secrets
import sys
from typing import TextIO

import structlog

from stateless.email.base import EmailMessage, Recipient, batches, substitute

log = structlog.get_logger("stateless.email")

PRINTED_RECIPIENTS = 10  # per message; a campaign prints its first few and counts the rest


class ConsoleEmailProvider:
    name = "console"
    max_batch = 1000

    def __init__(self, *, show_content: bool = False, out: TextIO | None = None) -> None:
        self.show_content = show_content
        self._out = out

    async def send(self, message: EmailMessage) -> list[str]:
        ids = []
        for batch in batches(message.recipients, self.max_batch):
            message_id = f"console-{secrets.token_hex(8)}"
            log.info(
                "email_sent_console",
                count=len(batch),
                message_ref=message_id,
                templated=message.template_id is not None,
            )
            if self.show_content:
                self._print(message, batch, message_id)
            ids.append(message_id)
        return ids

    def _print(self, message: EmailMessage, batch: list[Recipient], message_id: str) -> None:
        out = self._out or sys.stdout
        for recipient in batch[:PRINTED_RECIPIENTS]:
            values = recipient.substitutions
            lines = [
                f"----- email {message_id} (console provider, development only) -----",
                f"From: {message.sender}",
                f"To: {recipient.address}",
            ]
            if message.reply_to:
                lines.append(f"Reply-To: {message.reply_to}")
            lines.append(f"Subject: {substitute(message.subject, values)}")
            if message.template_id:
                data = json.dumps(message.dynamic_template_data or {}, sort_keys=True)
                lines.append(f"Template: {message.template_id} {data}")
            lines.append("")
            text = substitute(message.text, values)
            html = substitute(message.html, values)
            lines.append(text if text is not None else "(no text part)")
            if html is not None:
                lines += ["", "--- html ---", html]
            lines.append("-----")
            out.write("\n".join(lines) + "\n")
        if len(batch) > PRINTED_RECIPIENTS:
            out.write(f"(and {len(batch) - PRINTED_RECIPIENTS} more recipients)\n")
        out.flush()

    async def aclose(self) -> None:
        return None
