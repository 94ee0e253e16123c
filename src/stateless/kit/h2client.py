"""A small async HTTP/2 client on `h2`: one origin, a few TLS connections, many streams.

Why: pushing means tens of thousands of tiny requests to one origin (APNs, a Web Push service);
httpx spends about 1.2 ms of CPU on each. This client does only that, cheaply, and still obeys
the protocol: the peer's SETTINGS (concurrent streams, window sizes, frame size), flow control
for request bodies, GOAWAY (drain, retry what the peer never processed, reconnect), a timeout
per request, bounded reconnects.

Usage::

    client = H2Client("https://api.push.apple.com", ssl_context=ctx, max_connections=2)
    response = await client.request(
        "POST", "/3/device/ab12...", headers=[("apns-topic", "com.example.app")],
        body=b"{}", timeout=10.0,
    )
    response.status, response.header("apns-id"), response.body
    await client.aclose()

HTTPS with ALPN `h2` only: an origin that offers only HTTP/1.1 fails with `H2ConnectError`
("does not offer HTTP/2"), and the caller falls back to httpx for it.

Errors are `H2Error` subclasses, each with `processed`: False when the peer certainly did not
act on the request (so a retry cannot duplicate it), True when it may have:

- `H2ConnectError` (processed False): TCP/TLS connect failed, or the peer does not speak h2;
- `H2Refused` (processed False): GOAWAY above its `last_stream_id`, or RST_STREAM
  REFUSED_STREAM, more often in a row than `max_refused_retries` (they are retried on a fresh
  connection transparently before that);
- `H2ConnectionLost` (processed True): the connection broke while the request was in flight;
- `H2StreamReset` (processed True): the peer reset the stream (`error_code`);
- `H2Timeout` (processed True): no complete answer within `timeout` (the stream is cancelled);
- `H2ResponseTooLarge` (processed True): the body exceeded `max_response_bytes`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import NoAvailableStreamIDError, ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hpack import Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack.table import HeaderTable
from hyperframe.frame import GoAwayFrame

__all__ = [
    "H2Client",
    "H2ConnectError",
    "H2ConnectionLost",
    "H2Error",
    "H2Refused",
    "H2Response",
    "H2ResponseTooLarge",
    "H2StreamReset",
    "H2Timeout",
]

# Our receive window per stream and for the connection: answers are small, but a few hundred
# streams answering at once should not wait on WINDOW_UPDATEs.
_RECEIVE_WINDOW = 1 << 20


@dataclass(frozen=True, slots=True)
class H2Response:
    """A complete answer: status, headers (lower-case names, in order), body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of a header (name in lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class H2Error(Exception):
    """A request got no answer. `processed`: may the peer have acted on it?"""

    processed = True


class H2ConnectError(H2Error):
    processed = False


class H2Refused(H2Error):
    processed = False


class H2ConnectionLost(H2Error):
    pass


class H2StreamReset(H2Error):
    def __init__(self, error_code: int) -> None:
        super().__init__(f"stream reset by the peer ({_code_name(error_code)})")
        self.error_code = error_code
        self.processed = error_code != ErrorCodes.REFUSED_STREAM


class H2Timeout(H2Error):
    pass


class H2ResponseTooLarge(H2Error):
    pass


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


class _H2(H2Connection):
    """h2 treats a received GOAWAY as the end of the connection: every later frame, even the
    answers to streams the peer promised to finish (id <= last_stream_id), is a protocol error,
    and buffered outbound data is dropped. RFC 9113 section 6.8 says those streams go on, so we
    only report the GOAWAY; the client itself stops opening streams on this connection."""

    # h2 remembers 65,536 closed stream ids per connection (to tell late frames from bad ones):
    # ~10 MB on a connection that carried 100,000 pushes. A few times the streams we ever have
    # in flight is enough.
    MAX_CLOSED_STREAMS = 4096

    # Our own count of the streams in flight (the client's dict), set by _Connection.
    in_flight: dict[int, Any] | None = None
    _counted = 0

    @property
    def open_outbound_streams(self) -> int:
        """h2 counts open streams by walking all of them on every send (O(streams) per request,
        a tenth of the client's CPU at a few hundred in flight); our dict already knows. Every
        256th call still takes h2's walk, which also forgets closed streams."""
        self._counted += 1
        if self.in_flight is None or self._counted % 256 == 0:
            return super().open_outbound_streams
        return len(self.in_flight)

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Any], list[Any]]:
        event = ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def _configuration() -> H2Configuration:
    return H2Configuration(
        client_side=True,
        header_encoding=None,
        # We build every outbound header ourselves; h2's checks cost more than the rest of a send.
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        # Of an answer we read `:status` (checked in _on_response: a stream without a valid
        # one is reset) and a header or two by name; h2's per-field checks of every answer cost
        # a tenth of a push's CPU and guard a server against request smuggling, not a client.
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )


class _CountingTable(HeaderTable):
    """The HPACK dynamic table, counting insertions: an encoding that inserted nothing stays
    valid, byte for byte, until the next insertion or resize."""

    inserts = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.inserts += 1
        super().add(name, value)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


class _PlainEncoder(Encoder):
    """HPACK without Huffman coding, remembering the last request's constant headers.

    Why plain: our constant headers are indexed after the first request and the one that
    changes (the path) is short or hex, which Huffman shortens by a quarter for a tenth of the
    client's CPU. Why the memo: once every constant header sits in the dynamic table, a request
    encodes them to the same bytes as the previous one (indexed fields) for as long as the
    table is unchanged; only the never-indexed fields (the path) are encoded each time. The
    memo is used only when the same constant headers come again, nothing was inserted since,
    and no table size change is pending: anything else takes the ordinary encoding.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _CountingTable()
        self._memo_key: tuple[object, ...] | None = None
        self._memo_table: tuple[int, int] = (-1, -1)
        self._memo_runs: list[bytes] = []

    def encode(
        self,
        headers: Iterable[
            HeaderTuple
            | tuple[bytes | str, bytes | str]
            | tuple[bytes | str, bytes | str, bool | None]
        ]
        | dict[bytes | str, bytes | str],
        huffman: bool = True,
    ) -> bytes:
        if isinstance(headers, dict):
            return super().encode(headers, huffman=False)
        fields = list(headers)
        key: list[object] = []
        secret: list[tuple[bytes, bytes]] = []
        for field in fields:
            if isinstance(field, HeaderTuple) and not field.indexable:
                key.append(None)  # a never-indexed field: encoded afresh every time
                secret.append((_as_bytes(field[0]), _as_bytes(field[1])))
            elif len(field) == 2:
                key.append(field)
            else:  # (name, value, sensitive): the general path
                return super().encode(fields, huffman=False)
        table = self.header_table
        assert isinstance(table, _CountingTable)
        memo_key = tuple(key)
        state = (table.inserts, table.maxsize)
        if memo_key == self._memo_key and state == self._memo_table and not table.resized:
            memo = self._memo_runs
            out = [memo[0]]
            for (name, value), constant in zip(secret, memo[1:], strict=True):
                out.append(self.add((name, value), True, False))
                out.append(constant)
            return b"".join(out)
        # The ordinary encoding, field by field (as Encoder.encode), keeping the constant runs.
        out = []
        if table.resized:
            out.append(self._encode_table_size_change())
            table.resized = False
        inserts = table.inserts
        runs: list[bytes] = []
        run: list[bytes] = []
        for field in fields:
            name, value = _as_bytes(field[0]), _as_bytes(field[1])
            if isinstance(field, HeaderTuple) and not field.indexable:
                encoded = self.add((name, value), True, False)
                runs.append(b"".join(run))
                run = []
            else:
                encoded = self.add((name, value), False, False)
                run.append(encoded)
            out.append(encoded)
        runs.append(b"".join(run))
        if table.inserts == inserts:  # all indexed: the same bytes next time
            self._memo_key, self._memo_runs = memo_key, runs
            self._memo_table = (table.inserts, table.maxsize)
        else:
            self._memo_key = None
        return b"".join(out)


class _Stream:
    __slots__ = ("body", "done", "ended_local", "headers", "status", "window")

    def __init__(self, done: asyncio.Future[H2Response]) -> None:
        self.done = done
        self.status = 0
        self.headers: tuple[tuple[str, str], ...] = ()
        self.body = bytearray()
        self.window: asyncio.Future[None] | None = None
        self.ended_local = False


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: the h2 state machine, its streams, and a coalesced writer."""

    def __init__(self, client: H2Client) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.h2 = _H2(config=_configuration())
        self.h2.local_settings = Settings(
            client=True,
            initial_values={
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.INITIAL_WINDOW_SIZE: _RECEIVE_WINDOW,
                SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
            },
        )
        self.h2.encoder = _PlainEncoder()
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.h2.in_flight = self.streams
        self.reserved = 0  # slots promised to requests about to open a stream
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.closed = False
        self.going_away = False
        self.last_stream_id = 2**31 - 1
        self._flush_scheduled = False

    # -- capacity --------------------------------------------------------------------------
    @property
    def available(self) -> int:
        if self.closed or self.going_away or not self.ready.done():
            return 0
        limit = min(self.h2.remote_settings.max_concurrent_streams, self.client.max_streams)
        return limit - len(self.streams) - self.reserved

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_RECEIVE_WINDOW - 65535)
        self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            self._flush()
            self._abort(H2ConnectionLost(f"HTTP/2 protocol error from the peer: {exc}"))
            return
        for event in events:
            if isinstance(event, ResponseReceived):
                self._on_response(event)
            elif isinstance(event, DataReceived):
                self._on_data(event)
            elif isinstance(event, StreamEnded):
                self._on_end(event.stream_id)
            elif isinstance(event, WindowUpdated):
                self._on_window(event.stream_id)
            elif isinstance(event, StreamReset):
                self._fail(event.stream_id, H2StreamReset(int(event.error_code)))
            elif isinstance(event, RemoteSettingsChanged):
                self._on_settings(event)
            elif isinstance(event, ConnectionTerminated):
                self._on_goaway(event)
            # TrailersReceived, PingReceived, SettingsAcknowledged...: nothing to do
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = f"connection lost: {exc}" if exc else "connection closed by the peer"
        self._not_ready(H2ConnectError(reason))
        for stream_id in list(self.streams):
            if stream_id > self.last_stream_id:
                self._fail(stream_id, H2Refused("the peer went away before this stream"))
            else:
                self._fail(stream_id, H2ConnectionLost(reason))
        self.client._forget(self)

    def _not_ready(self, error: H2ConnectError) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # marked as seen: the connecting request may be gone

    # -- events ----------------------------------------------------------------------------
    def _on_response(self, event: ResponseReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        headers: list[tuple[str, str]] = []
        status = 0
        for name, value in event.headers or ():
            key = name.decode("ascii", "replace") if isinstance(name, bytes) else name
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if key == ":status":
                status = int(text) if len(text) == 3 and text.isdigit() else 0
            else:
                headers.append((key.lower(), text))
        if not 200 <= status <= 599:
            # No valid final status (h2 reports 1xx answers as another event): a malformed
            # answer, so the stream is reset (RFC 9113 8.1.1).
            self._reset(event.stream_id, ErrorCodes.PROTOCOL_ERROR)
            self._fail(event.stream_id, H2StreamReset(ErrorCodes.PROTOCOL_ERROR))
            return
        stream.status = status
        stream.headers = tuple(headers)

    def _on_data(self, event: DataReceived) -> None:
        self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        stream.body += event.data
        if len(stream.body) > self.client.max_response_bytes:
            self._reset(event.stream_id)
            self._fail(event.stream_id, H2ResponseTooLarge("response body too large"))

    def _on_end(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if not stream.ended_local:  # answered before we finished the body: stop sending it
            self._reset(stream_id, ErrorCodes.NO_ERROR)
        if not stream.done.done():
            stream.done.set_result(H2Response(stream.status, stream.headers, bytes(stream.body)))
        self._wake(stream)
        self._released()

    def _on_window(self, stream_id: int) -> None:
        if stream_id == 0:
            for stream in self.streams.values():
                self._wake(stream)
        elif (one := self.streams.get(stream_id)) is not None:
            self._wake(one)

    def _on_settings(self, event: RemoteSettingsChanged) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            self._on_window(0)
        self.client._wake_waiters(all_of_them=True)

    def _on_goaway(self, event: ConnectionTerminated) -> None:
        """Stop opening streams here; streams the peer never saw go back to be retried."""
        self.going_away = True
        last = event.last_stream_id if event.last_stream_id is not None else 2**31 - 1
        self.last_stream_id = min(self.last_stream_id, last)
        for stream_id in [s for s in self.streams if s > self.last_stream_id]:
            self._fail(stream_id, H2Refused("the peer went away before this stream (GOAWAY)"))
        self._not_ready(H2ConnectError("the peer refused the connection (GOAWAY)"))
        self.client._forget(self)
        self._close_if_drained()

    # -- requests --------------------------------------------------------------------------
    async def exchange(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> H2Response:
        """Send one request on a slot reserved by the client and wait for its answer."""
        self.reserved -= 1
        if self.closed or self.going_away:
            self.client._wake_waiters(all_of_them=False)
            raise H2Refused("the connection is closing")
        try:
            stream_id = self.h2.get_next_available_stream_id()
        except NoAvailableStreamIDError:
            self.going_away = True
            self.client._forget(self)
            self._close_if_drained()
            raise H2Refused("stream ids exhausted on this connection") from None
        request: list[tuple[str, str] | HeaderTuple] = [
            (":method", method),
            (":scheme", self.client.scheme),
            (":authority", self.client.authority),
            # Never indexed: a path differs per request (APNs: the device token), and adding
            # each to the HPACK table would evict the long constant headers (authorization).
            NeverIndexedHeaderTuple(":path", path),
            *headers,
        ]
        if body:
            request.append(("content-length", str(len(body))))
        try:
            self.h2.send_headers(stream_id, request, end_stream=not body)
        except ProtocolError as exc:  # not sent: our accounting and h2's disagree
            self._released()
            raise H2Refused(f"stream not opened: {exc}") from exc
        # Counted only once opened: h2 asks for the open streams while opening this one.
        stream = _Stream(self.loop.create_future())
        self.streams[stream_id] = stream
        try:
            if body:
                await self._send_body(stream_id, stream, body)
            else:
                stream.ended_local = True
                self._flush_soon()
            return await stream.done
        finally:
            # Still ours: cancelled (timeout), and cancelling this task cancelled `done` too.
            if self.streams.get(stream_id) is stream:
                del self.streams[stream_id]
                stream.done.cancel()
                self._reset(stream_id)
                self._flush_soon()
                self._released()

    async def _send_body(self, stream_id: int, stream: _Stream, body: bytes) -> None:
        """DATA frames within the peer's stream and connection windows and its frame size."""
        offset, size = 0, len(body)
        while offset < size:
            if stream.done.done() or self.closed:
                return
            window = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if window <= 0:
                self._flush()
                stream.window = self.loop.create_future()
                await stream.window
                continue
            chunk = body[offset : offset + window]
            offset += len(chunk)
            try:
                self.h2.send_data(stream_id, chunk, end_stream=offset >= size)
            except StreamClosedError:
                return  # the peer reset or answered it; the outcome arrives as an event
        stream.ended_local = True
        self._flush_soon()

    # -- plumbing --------------------------------------------------------------------------
    def _fail(self, stream_id: int, error: H2Error) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if not stream.done.done():
            stream.done.set_exception(error)
        self._wake(stream)
        self._released()

    @staticmethod
    def _wake(stream: _Stream) -> None:
        if stream.window is not None and not stream.window.done():
            stream.window.set_result(None)

    def _released(self) -> None:
        if self.going_away or self.closed:
            self._close_if_drained()
        else:
            self.client._wake_waiters(all_of_them=False)

    def _reset(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        if self.closed:
            return
        with contextlib.suppress(StreamClosedError, ProtocolError):  # already closed
            self.h2.reset_stream(stream_id, code)

    def _close_if_drained(self) -> None:
        if not self.streams and not self.closed and self.transport is not None:
            self.closed = True
            with contextlib.suppress(ProtocolError):
                self.h2.close_connection()
            self._flush()
            self.transport.close()

    def _abort(self, error: H2Error) -> None:
        self.going_away = True
        for stream_id in list(self.streams):
            self._fail(stream_id, error)
        if self.transport is not None:
            self.transport.close()
        self.closed = True
        self.client._forget(self)

    def _flush_soon(self) -> None:
        """Coalesce the frames of every request made in this loop iteration into one write."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        for stream_id in list(self.streams):
            self._fail(stream_id, H2ConnectionLost("client closed"))
        if self.transport is not None and not self.closed:
            self.closed = True
            with contextlib.suppress(ProtocolError):
                self.h2.close_connection()
            self._flush()
            self.transport.close()


class H2Client:
    """HTTP/2 to one origin (`https://host[:port]`): a small pool of connections, many streams.

    - `max_connections`: connections opened at most; a new one only when the others are full
      (the peer's MAX_CONCURRENT_STREAMS, capped by `max_streams`) or going away.
    - `timeout` (default per request): seconds from asking to the complete answer.
    - `connect_timeout`: TCP + TLS + the peer's first SETTINGS.
    - `max_refused_retries`: times a request the peer never processed (GOAWAY above its
      last_stream_id, REFUSED_STREAM) is tried again on another connection before `H2Refused`.
      A failed connect is not retried here: it fails every queued request at once, and the
      caller decides on backoff.
    - `ssl_context`: trust for the origin (its ALPN is set to h2); None = the system store.

    Requests queue (FIFO) when every connection is full. Safe to share by every task of one
    event loop; `aclose()` fails whatever is still in flight.
    """

    def __init__(
        self,
        origin: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 2,
        max_streams: int = 1000,
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
        max_refused_retries: int = 3,
        max_response_bytes: int = 1 << 20,
        resolve: Callable[[str, int], Awaitable[str]] | None = None,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"an https origin is required, got {origin!r}")
        self.scheme = "https"
        self.host = parts.hostname
        self.port = parts.port or 443
        self.authority = self.host if self.port == 443 else f"{self.host}:{self.port}"
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
        ssl_context.set_alpn_protocols(["h2"])
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.max_streams = max_streams
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_refused_retries = max_refused_retries
        self.max_response_bytes = max_response_bytes
        # Optional: the address to connect to for (host, port), e.g. an SSRF check after DNS
        # resolution; TLS still verifies `host`. Its exceptions propagate to the request.
        self.resolve = resolve
        self._connections: list[_Connection] = []
        self._connecting = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._connect_failures = 0
        self._connect_error: H2ConnectError | None = None
        self.connections_opened = 0  # for tests and metrics: reconnects show here

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        timeout: float | None = None,  # noqa: ASYNC109 - per request, the API's contract
    ) -> H2Response:
        """Send one request and return the complete answer; raises an `H2Error`.

        Header names must be lower case; `:method`, `:scheme`, `:authority`, `:path` and
        `content-length` are added here. A request the peer certainly never processed is
        retried on another connection (up to `max_refused_retries` times) within `timeout`.
        """
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        connection = await self._acquire()
                        return await connection.exchange(method, path, headers, body)
                    except H2Refused:
                        if attempt > self.max_refused_retries:
                            raise
        except TimeoutError:
            raise H2Timeout("no complete answer in time") from None

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._connections):
            connection.close()
        self._connections.clear()
        self._wake_waiters(all_of_them=True)

    # -- pool ------------------------------------------------------------------------------
    async def _acquire(self) -> _Connection:
        """A connection with a free stream slot, reserved; connects or queues when none."""
        while True:
            if self._closed:
                raise H2ConnectError("the client is closed")
            for connection in self._connections:
                if connection.available > 0:
                    connection.reserved += 1
                    return connection
            if self._connecting == 0 and len(self._connections) < self.max_connections:
                self._connecting += 1
                try:
                    connection = await self._connect()
                except H2ConnectError as exc:
                    self._connect_failures += 1
                    self._connect_error = exc
                    raise
                finally:
                    self._connecting -= 1
                    self._wake_waiters(all_of_them=True)
                if self._closed:
                    connection.close()
                    raise H2ConnectError("the client is closed")
                self._connections.append(connection)
                continue
            failures = self._connect_failures
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_waiters(all_of_them=False)  # pass on a wake-up we cannot use
                raise
            failed = self._connect_failures != failures and self._connect_error is not None
            if failed and not any(c.available > 0 for c in self._connections):
                raise H2ConnectError(str(self._connect_error))

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        transport: asyncio.BaseTransport | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                address = self.host
                if self.resolve is not None:
                    address = await self.resolve(self.host, self.port)
                transport, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    address,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host,
                )
                ssl_object = transport.get_extra_info("ssl_object")
                if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                    transport.close()
                    raise H2ConnectError(f"{self.authority} does not offer HTTP/2 (ALPN h2)")
                await connection.ready
        except BaseException as exc:
            if transport is not None:
                transport.close()
            if isinstance(exc, TimeoutError):
                raise H2ConnectError(f"connecting to {self.authority} timed out") from None
            if isinstance(exc, (OSError, ssl.SSLError)):
                raise H2ConnectError(f"cannot connect to {self.authority}: {exc!r}") from exc
            raise
        self.connections_opened += 1
        return connection

    def _forget(self, connection: _Connection) -> None:
        """A connection closing or going away takes no new streams; waiters may connect anew."""
        if connection in self._connections:
            self._connections.remove(connection)
        self._wake_waiters(all_of_them=True)

    def _wake_waiters(self, *, all_of_them: bool) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not all_of_them:
                    return
