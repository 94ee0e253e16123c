"""A local peer speaking SendGrid's v3 Mail Send API: POST /v3/mail/send.

Checks the Bearer key like SendGrid (401 with SendGrid's error shape otherwise), refuses an empty
content value with 400 as SendGrid's v3 schema does, answers 202
with an X-Message-Id, or what the test scripted (400/429/500...). Records each request body.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.peers.webhook import Answer, Received, serve_http


@dataclass
class SendGridPeer:
    api_key: str
    script: list[Answer] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Bodies of the requests that were answered 202 (mail that went out)."""
        return [body for body, ok in zip(self.requests, self._accepted, strict=True) if ok]

    _accepted: list[bool] = field(default_factory=list)

    def respond(self, request: Received) -> Answer:
        if request.method != "POST" or request.path != "/v3/mail/send":
            return Answer(404, b'{"errors":[{"message":"not found"}]}')
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            self.requests.append({})
            self.headers.append(request.headers)
            self._accepted.append(False)
            body = {
                "errors": [
                    {
                        "field": None,
                        "message": "The provided authorization grant is invalid, expired, or revoked",
                    }
                ]
            }
            return Answer(401, json.dumps(body).encode(), {"Content-Type": "application/json"})
        body = json.loads(request.body)
        self.requests.append(body)
        self.headers.append(request.headers)
        empty = [i for i, part in enumerate(body.get("content", [])) if not part.get("value")]
        if empty:  # SendGrid's v3 schema: a content value must be at least one character
            self._accepted.append(False)
            return sendgrid_error(
                400,
                f"content.{empty[0]}.value",
                "The content value must be a string at least one character in length.",
            )
        if self.script:
            answer = self.script.pop(0)
            self._accepted.append(answer.status == 202)
            if answer.status == 202 and "X-Message-Id" not in answer.headers:
                answer.headers["X-Message-Id"] = self._new_id()
            return answer
        self._accepted.append(True)
        return Answer(202, b"", {"X-Message-Id": self._new_id()})

    def _new_id(self) -> str:
        message_id = secrets.token_urlsafe(16)
        self.message_ids.append(message_id)
        return message_id


def sendgrid_error(status: int, field_name: str | None, message: str) -> Answer:
    body = {"errors": [{"field": field_name, "message": message, "help": None}]}
    return Answer(status, json.dumps(body).encode(), {"Content-Type": "application/json"})


@contextmanager
def running_sendgrid(api_key: str, *script: Answer) -> Iterator[SendGridPeer]:
    peer = SendGridPeer(api_key=api_key, script=list(script))
    with serve_http(peer.respond) as port:
        peer.port = port
        yield peer
