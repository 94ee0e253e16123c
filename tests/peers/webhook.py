"""A local webhook receiver (Standard Webhooks consumer side) and the tiny threaded HTTP server
the other HTTP peers of this part share.

The receiver records every delivery (headers and raw body) and answers what the test scripted:
a status per delivery, a redirect, or a stall longer than the sender's patience.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


Responder = Callable[[Received], Answer]


@contextmanager
def serve_http(respond: Responder) -> Iterator[int]:
    """Serve `respond` on 127.0.0.1 with a free port (yielded), in a thread, until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Received(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw
            )
            answer = respond(request)
            if answer.delay_seconds:
                time.sleep(answer.delay_seconds)
            try:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_POST = _handle
        do_GET = _handle

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class WebhookReceiver:
    """Answers the scripted statuses in order (then `default`), recording each delivery."""

    script: list[Answer] = field(default_factory=list)
    default: Answer = field(default_factory=lambda: Answer(200, b'{"ok":true}'))
    received: list[Received] = field(default_factory=list)
    port: int = 0
    path: str = "/hooks/stateless"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def respond(self, request: Received) -> Answer:
        self.received.append(request)
        return self.script.pop(0) if self.script else self.default


@contextmanager
def running_webhook_receiver(*script: Answer) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(script=list(script))
    with serve_http(receiver.respond) as port:
        receiver.port = port
        yield receiver
