"""SendGrid v3 Mail Send over async HTTP: 202 is success, X-Message-Id the message id.

429 honours Retry-After and 5xx/network errors are retried a few times within a bounded wait;
after that the error is `transient` so the task queue can try again later.
"""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Any

import httpx

from stateless.email.base import EmailError, EmailMessage, Recipient, batches
from stateless.kit.push.retry import Retryable, RetryPolicy

MAX_PERSONALIZATIONS = 1000  # SendGrid's per-request limit
# 3 tries, 0.25-0.5 s then 0.5-0.75 s apart (or the Retry-After asked for, up to 10 s).
SENDGRID_RETRY = RetryPolicy(attempts=3, initial_seconds=0.25, maximum_seconds=2.0)
MAX_RETRY_AFTER_SECONDS = 10.0
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.\[\]-]{1,64}$")

_PERMANENT = {
    400: "SendGrid rejected the message as invalid",
    401: "SendGrid rejected the API key",
    403: "SendGrid refused: the key lacks the mail.send permission or the sender is not verified",
    413: "SendGrid refused the message as too large",
}


def _address(value: str) -> dict[str, str]:
    name, email = parseaddr(value)
    out = {"email": email or value}
    if name:
        out["name"] = name
    return out


def _personalization(message: EmailMessage, recipient: Recipient) -> dict[str, Any]:
    item: dict[str, Any] = {"to": [{"email": recipient.address}]}
    if message.template_id:
        data = dict(message.dynamic_template_data or {})
        data.update(recipient.substitutions)
        if data:
            item["dynamic_template_data"] = data
    elif recipient.substitutions:
        item["substitutions"] = {"{{" + k + "}}": v for k, v in recipient.substitutions.items()}
    return item


def mail_send_body(message: EmailMessage, recipients: list[Recipient]) -> dict[str, Any]:
    """The v3 /mail/send JSON: one personalization per recipient, so nobody sees the others."""
    body: dict[str, Any] = {
        "personalizations": [_personalization(message, r) for r in recipients],
        "from": _address(message.sender),
        "subject": message.subject,
    }
    content = []
    # SendGrid's v3 schema refuses an empty `value`: an empty part is left out, not sent.
    if message.text:
        content.append({"type": "text/plain", "value": message.text})
    if message.html:
        content.append({"type": "text/html", "value": message.html})
    if content:
        body["content"] = content
    if message.reply_to:
        body["reply_to"] = _address(message.reply_to)
    if message.template_id:
        body["template_id"] = message.template_id
    return body


def _rejection_detail(response: httpx.Response) -> str:
    detail = _PERMANENT.get(response.status_code, "SendGrid refused the request")
    fields: list[str] = []
    try:
        answer = response.json()
        errors = answer.get("errors", []) if isinstance(answer, dict) else []
        for error in errors if isinstance(errors, list) else []:
            field = error.get("field") if isinstance(error, dict) else None
            if isinstance(field, str) and _FIELD_NAME.match(field) and field not in fields:
                fields.append(field)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's reach
        pass
    suffix = f" (fields: {', '.join(fields[:5])})" if fields else ""
    return f"{detail} ({response.status_code}){suffix}"


class SendGridProvider:
    name = "sendgrid"
    max_batch = MAX_PERSONALIZATIONS

    def __init__(
        self,
        api_key: str,
        base_url: str,
        client: httpx.AsyncClient,
        retry: RetryPolicy = SENDGRID_RETRY,
    ) -> None:
        self._url = base_url.rstrip("/") + "/v3/mail/send"
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._retry = retry
        self._client = client

    async def send(self, message: EmailMessage) -> list[str]:
        ids = []
        for batch in batches(message.recipients, self.max_batch):
            ids.append(await self._post(mail_send_body(message, batch)))
        return ids

    async def _post(self, body: dict[str, Any]) -> str:
        try:
            async for attempt in self._retry.attempts_of():
                with attempt:
                    return await self._post_once(body)
        except Retryable as exc:
            raise EmailError(exc.detail, transient=True) from None
        raise EmailError("SendGrid did not answer", transient=True)  # pragma: no cover

    async def _post_once(self, body: dict[str, Any]) -> str:
        """One try: the message id, `Retryable` for what may pass, EmailError for what won't."""
        try:
            response = await self._client.post(self._url, json=body, headers=self._headers)
        except httpx.TimeoutException:
            raise Retryable("SendGrid timed out") from None
        except httpx.TransportError:
            raise Retryable("SendGrid could not be reached") from None
        if response.status_code in (200, 202):
            return str(response.headers.get("x-message-id", ""))
        if response.status_code == 429:
            detail = "SendGrid rate limit reached (429)"
            retry_after = _retry_after(response)
            if retry_after > MAX_RETRY_AFTER_SECONDS:  # too long to wait here: the queue retries
                raise EmailError(detail, transient=True)
            raise Retryable(detail, retry_after=retry_after)
        if response.status_code >= 500:
            raise Retryable(f"SendGrid failed ({response.status_code})")
        raise EmailError(_rejection_detail(response), transient=False, status=response.status_code)

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_after(response: httpx.Response) -> float:
    raw = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return 1.0
