"""How `stateless serve` runs uvicorn: a graceful shutdown that answers every request a client
sent before SIGTERM, instead of resetting the connections it arrived on.

uvicorn's own shutdown loses two kinds of connection whose request was already sent:
- connections the kernel had completed but the server had not accepted yet: uvicorn closes the
  listening socket on the tick that sees the signal, and Linux resets every connection still in
  the accept queue; one accepted in the loop pass before the close fails to get its transport
  (asyncio refuses to attach it to a closed server) and is reset too. `DrainingServer` keeps
  accepting for ACCEPT_WINDOW_SECONDS, then gives the last accepted ones a few loop passes.
- connections accepted but not read yet: uvicorn's protocol closes at once any connection with
  no request parsed, though the request bytes usually sit in the socket buffer one loop turn
  away (closing a socket with unread data sends a reset). `DrainingHttpToolsProtocol` gives such
  a connection FIRST_REQUEST_GRACE_SECONDS to deliver its request, answers it with
  `Connection: close`, and closes it as before if nothing comes.
Idle keep-alive connections (they have been answered) still close at once. With several workers
(WEB_CONCURRENCY > 1) uvicorn's supervisor builds its own servers, so only the protocol part
applies there; the listening socket stays open in the supervisor meanwhile.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FIRST_REQUEST_GRACE_SECONDS = 1.0
ACCEPT_WINDOW_SECONDS = 0.05
ACCEPT_PASSES = 3
PROTOCOL = "stateless.kit.runtime.draining:DrainingHttpToolsProtocol"


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    _draining = False
    _grace_timer: asyncio.TimerHandle | None = None

    def shutdown(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            # Accepted, nothing parsed yet: its request may already be in the socket buffer.
            self._draining = True
            self._grace_timer = self.loop.call_later(
                FIRST_REQUEST_GRACE_SECONDS, self._close_if_no_request
            )
            return
        super().shutdown()

    def _close_if_no_request(self) -> None:
        self._grace_timer = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answer this request, then close
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        super().connection_lost(exc)


class DrainingServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # The loop keeps accepting what the kernel has queued for a moment, and the last ones
        # accepted get their transports, so closing the listening socket resets nobody who
        # connected before the signal.
        await asyncio.sleep(ACCEPT_WINDOW_SECONDS)
        for _ in range(ACCEPT_PASSES):
            await asyncio.sleep(0)
        await super().shutdown(sockets)


def run(app: Any, **options: Any) -> None:
    """`uvicorn.run(app, **options)` with the draining server and protocol."""
    config = uvicorn.Config(app, http=PROTOCOL, **options)
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server = DrainingServer(config=config)
    server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE
