"""The HTTP/1.1 protocol `stateless serve` runs: uvicorn's httptools protocol, plus a graceful
shutdown that does not drop a connection it has accepted but not yet read.

On SIGTERM uvicorn stops listening and calls `shutdown()` on every open connection; its protocol
closes at once any connection with no request parsed yet. A client whose connection the server
had just accepted has usually sent its request already (the bytes sit unread in the socket
buffer, one loop turn away), and it sees the connection closed without an answer. Here such a
connection gets FIRST_REQUEST_GRACE_SECONDS to deliver its request, which is then answered with
`Connection: close`; a connection that sends nothing in that time is closed as before. Idle
keep-alive connections (they have been answered) still close at once.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FIRST_REQUEST_GRACE_SECONDS = 1.0


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
