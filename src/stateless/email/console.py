"""Development backend: logs that an email was sent, with a recipient count, never an address."""

from __future__ import annotations

import secrets

import structlog

from stateless.email.base import EmailMessage, batches

log = structlog.get_logger("stateless.email")


class ConsoleEmailProvider:
    name = "console"
    max_batch = 1000

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
            ids.append(message_id)
        return ids

    async def aclose(self) -> None:
        return None
