"""A real SMTP server on 127.0.0.1 (aiosmtpd), optionally requiring AUTH, recording messages."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    message: Message


@dataclass
class SmtpPeer:
    username: str | None = None
    password: str | None = None
    delivered: list[Delivered] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        auth = f"{self.username}:{self.password}@" if self.username else ""
        return f"smtp://{auth}127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.delivered.append(
            Delivered(
                envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)
            )
        )
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        ):
            self.logins.append(auth_data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_smtp(username: str | None = None, password: str | None = None) -> Iterator[SmtpPeer]:
    peer = SmtpPeer(username=username, password=password)
    peer.port = _free_port()
    kwargs: dict[str, Any] = {}
    if username:
        kwargs = {
            "authenticator": peer.authenticate,
            "auth_required": True,
            "auth_require_tls": False,
        }
    controller = Controller(peer, hostname="127.0.0.1", port=peer.port, **kwargs)
    controller.start()
    try:
        yield peer
    finally:
        controller.stop()
