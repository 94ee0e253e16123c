"""SMTP with aiosmtplib: smtp://user:pass@host:port, smtps:// for implicit TLS, ?starttls=true.

One connection per send; each recipient gets an individual message (own To: header).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from stateless.email.base import EmailError, EmailMessage, substitute

SMTP_TIMEOUT_SECONDS = 20.0
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool
    starttls: bool


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("SMTP_URL must look like smtp://user:pass@host:port or smtps://...")
    implicit = parts.scheme == "smtps"
    query = parse_qs(parts.query)
    starttls = (query.get("starttls") or ["false"])[0].lower() in _TRUE
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or (465 if implicit else 587 if starttls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=implicit,
        starttls=starttls and not implicit,
    )


class SmtpProvider:
    name = "smtp"
    max_batch = 100  # messages per connection

    def __init__(self, url: str) -> None:
        self._target = parse_smtp_url(url)

    def _mime(self, message: EmailMessage, index: int) -> MimeMessage:
        recipient = message.recipients[index]
        values = recipient.substitutions
        mime = MimeMessage()
        mime["From"] = message.sender
        mime["To"] = recipient.address
        mime["Subject"] = substitute(message.subject, values) or ""
        mime["Date"] = formatdate(usegmt=True)
        domain = parseaddr(message.sender)[1].rpartition("@")[2] or "localhost"
        mime["Message-ID"] = make_msgid(domain=domain)
        if message.reply_to:
            mime["Reply-To"] = message.reply_to
        text = substitute(message.text, values)
        html = substitute(message.html, values)
        mime.set_content(text if text is not None else (mime["Subject"] if html is None else ""))
        if html is not None:
            mime.add_alternative(html, subtype="html")
        return mime

    async def send(self, message: EmailMessage) -> list[str]:
        if message.template_id:
            raise EmailError("SMTP cannot render provider templates (template_id)", transient=False)
        target = self._target
        ids: list[str] = []
        for start in range(0, len(message.recipients), self.max_batch):
            client = aiosmtplib.SMTP(
                hostname=target.host,
                port=target.port,
                use_tls=target.implicit_tls,
                start_tls=target.starttls,
                timeout=SMTP_TIMEOUT_SECONDS,
            )
            try:
                async with client:
                    if target.username:
                        await client.login(target.username, target.password or "")
                    for index in range(start, min(start + self.max_batch, len(message.recipients))):
                        mime = self._mime(message, index)
                        await client.send_message(mime)
                        ids.append(str(mime["Message-ID"]))
            except aiosmtplib.SMTPAuthenticationError as exc:
                raise EmailError("SMTP login refused", transient=False, status=exc.code) from None
            except aiosmtplib.SMTPResponseException as exc:
                transient = 400 <= exc.code < 500
                raise EmailError(
                    f"SMTP server refused the message ({exc.code})",
                    transient=transient,
                    status=exc.code,
                ) from None
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                raise EmailError("SMTP server could not be reached", transient=True) from None
        return ids

    async def aclose(self) -> None:
        return None
