"""A small async HTTP/2 client on `h2`: one origin, a few TLS connections, many streams.

Why: pushing means tens of thousands of tiny requests to one origin (APNs, a Web Push service);
httpx spends about 1.2 ms of CPU on each. This client does only that, cheaply, and still obeys
the protocol: the peer's SETTINGS (concurrent streams, window sizes, frame size), flow control
for request bodies, GOAWAY (drain, retry what the peer never processed, reconnect, log why),
REFUSED_STREAM retried, a PING before reusing a connection that has been quiet and on a timer
while answers are due (a half-open connection fails fast instead of costing every request its
timeout), write backpressure (no new frames while the socket's buffer is full), a timeout per
request that tells "never sent" from "sent, answer late", bounded reconnects.

Usage::

    client = H2Client("https://api.push.apple.com", ssl_context=ctx, max_connections=2)
    response = await client.request(
        "POST", "/3/device/ab12...", headers=[("apns-topic", "com.example.app")],
        body=b"{}", timeout=10.0,
    )
    response.status, response.header("apns-id"), response.body
    await client.aclose()

HTTPS with ALPN `h2` only: an origin that offers only HTTP/1.1 fails with `H2ConnectError`
("does not offer HTTP/2"), and the caller falls back to httpx for it. Plain `http://` (HTTP/2
with prior knowledge, no TLS) only towards a loopback address: local test peers.

Errors are `H2Error` subclasses, each with `processed`: False when the peer certainly did not
act on the request (so a retry cannot duplicate it), True when it may have:

- `H2ConnectError` (processed False): TCP/TLS connect failed, or the peer does not speak h2;
- `H2Refused` (processed False): GOAWAY above its `last_stream_id`, or RST_STREAM
  REFUSED_STREAM, more often in a row than `max_refused_retries` (they are retried
  transparently before that, on another connection after a GOAWAY);
- `H2QueueTimeout` (processed False): the time ran out before the request was sent (waiting
  for a stream slot, a connection, a PING's answer or a writable socket);
- `H2ConnectionLost` (processed True): the connection broke while the request was in flight
  (also: the peer did not answer a PING within `ping_timeout`);
- `H2StreamReset` (processed True): the peer reset the stream (`error_code`);
- `H2Timeout` (processed True): sent, but no complete answer within `timeout` (the stream is
  cancelled);
- `H2ResponseTooLarge` (processed True): the body exceeded `max_response_bytes`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import h2
import hpack
import structlog
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

from stateless.kit.wire.urls import is_loopback_host

__all__ = [
    "BorrowedInternalMissing",
    "H2Client",
    "H2ConnectError",
    "H2ConnectionLost",
    "H2Error",
    "H2QueueTimeout",
    "H2Refused",
    "H2Response",
    "H2ResponseTooLarge",
    "H2StreamReset",
    "H2Timeout",
]

# Our receive window per stream and for the connection: answers are small, but a few hundred
# streams answering at once should not wait on WINDOW_UPDATEs.
_RECEIVE_WINDOW = 1 << 20
# GOAWAY debug data is the peer's free text: logged printable, truncated to this many characters.
_GOAWAY_DEBUG_CHARS = 120

log = structlog.get_logger("stateless.kit.push.h2client")


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
    """Sent, but no complete answer in time: the peer may have acted on it."""


class H2QueueTimeout(H2Error):
    """The time ran out before the request was sent: certainly not processed."""

    processed = False


class H2ResponseTooLarge(H2Error):
    pass


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


def _printable(data: bytes | None) -> str | None:
    """GOAWAY debug data for a log line: printable ASCII only, truncated."""
    if not data:
        return None
    text = data[: _GOAWAY_DEBUG_CHARS * 2].decode("ascii", "replace")
    text = "".join(c if c.isprintable() and c != "\ufffd" else "?" for c in text)
    return text[:_GOAWAY_DEBUG_CHARS] + ("..." if len(data) > _GOAWAY_DEBUG_CHARS else "")


class _Attempt:
    """One request's progress: `sent` once handed to a connection (then it may be processed)."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


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
        # Liveness: when a frame last arrived, the PING in flight (resolved by any frame or
        # given up after `ping_timeout`), and the timer that PINGs while answers are due.
        self.last_received = self.loop.time()
        self._probe: asyncio.Future[None] | None = None
        self._probe_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        # Write backpressure: the transport's buffer is above its high-water mark.
        self._paused = False
        self._writable: asyncio.Future[None] | None = None

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
        if self.client.ping_interval is not None:
            self._idle_timer = self.loop.call_later(self.client.ping_interval, self._check_quiet)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._set_writable()

    def _set_writable(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    async def _drain(self) -> None:
        """Wait while the socket's buffer is full (the peer or the network is not reading)."""
        while self._paused and not self.closed:
            if self._writable is None:
                self._writable = self.loop.create_future()
            await asyncio.shield(self._writable)  # one waiter's cancel must not wake the rest

    def data_received(self, data: bytes) -> None:
        self.last_received = self.loop.time()
        if self._probe is not None:
            self._probe_answered()  # any frame proves the connection alive
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
                if event.error_code == ErrorCodes.REFUSED_STREAM:  # not processed: retried
                    error: H2Error = H2Refused("the peer refused the stream (REFUSED_STREAM)")
                else:
                    error = H2StreamReset(int(event.error_code))
                self._fail(event.stream_id, error)
            elif isinstance(event, RemoteSettingsChanged):
                self._on_settings(event)
            elif isinstance(event, ConnectionTerminated):
                self._on_goaway(event)
            # PingAckReceived (handled above: any frame answers a probe), TrailersReceived,
            # PingReceived (h2 queues the ACK), SettingsAcknowledged...: nothing to do
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_liveness()
        self._set_writable()
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

    # -- liveness (PING) -------------------------------------------------------------------
    def suspect(self, now: float) -> bool:
        """Quiet for `ping_interval` or more (or a PING already out): probe before reuse."""
        interval = self.client.ping_interval
        return self._probe is not None or (
            interval is not None and now - self.last_received >= interval
        )

    def probe(self) -> asyncio.Future[None]:
        """PING the peer (once at a time); resolved by any frame, or the connection is
        abandoned after `ping_timeout` (the future resolves then too, never with an error)."""
        if self._probe is None:
            self._probe = self.loop.create_future()
            if self.closed:
                self._probe_answered()
                return self._probe
            probe = self._probe
            with contextlib.suppress(ProtocolError):
                self.h2.ping(os.urandom(8))
            self._flush()
            self._probe_timer = self.loop.call_later(self.client.ping_timeout, self._probe_failed)
            return probe
        return self._probe

    def _probe_answered(self) -> None:
        probe, self._probe = self._probe, None
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        if probe is not None and not probe.done():
            probe.set_result(None)

    def _probe_failed(self) -> None:
        self._probe_timer = None
        log.warning(
            "h2_ping_unanswered",
            origin=self.client.authority,
            seconds=self.client.ping_timeout,
            in_flight=len(self.streams),
        )
        self._abort(
            H2ConnectionLost("the peer did not answer a PING: connection presumed dead"), hard=True
        )

    def _check_quiet(self) -> None:
        """The timer: while answers are due and nothing arrived for `ping_interval`, PING."""
        self._idle_timer = None
        interval = self.client.ping_interval
        if self.closed or interval is None:
            return
        quiet = self.loop.time() - self.last_received
        if quiet >= interval and self.streams:
            self.probe()
        wait = interval - quiet if quiet < interval else interval
        self._idle_timer = self.loop.call_later(wait, self._check_quiet)

    def _stop_liveness(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._probe_answered()  # waiters look again: the connection is gone now

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
        code = int(event.error_code) if event.error_code is not None else 0
        (log.info if code == ErrorCodes.NO_ERROR else log.warning)(
            "h2_goaway",
            origin=self.client.authority,
            error_code=_code_name(code),
            last_stream_id=last,
            debug=_printable(event.additional_data),
            in_flight=len(self.streams),
        )
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
        attempt: _Attempt,
    ) -> H2Response:
        """Send one request on a slot reserved by the client and wait for its answer;
        `attempt.sent` turns True once the request is handed to the connection."""
        if self._paused:  # backpressure: nothing new while the socket's buffer is full
            try:
                await self._drain()
            except BaseException:
                self.reserved -= 1
                self._released()
                raise
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
        attempt.sent = True
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
            if self._paused:  # the socket's buffer is full: wait for it to drain
                await self._drain()
                continue
            chunk = body[offset : offset + window]
            offset += len(chunk)
            try:
                self.h2.send_data(stream_id, chunk, end_stream=offset >= size)
            except StreamClosedError:
                return  # the peer reset or answered it; the outcome arrives as an event
            if offset < size:
                self._flush()  # written now, so a full buffer pauses us before the next chunk
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

    def _abort(self, error: H2Error, *, hard: bool = False) -> None:
        self.going_away = True
        for stream_id in list(self.streams):
            self._fail(stream_id, error)
        if self.transport is not None:
            if hard:  # a dead peer: nothing buffered is worth waiting for
                self.transport.abort()
            else:
                self.transport.close()
        self.closed = True
        self._stop_liveness()
        self._set_writable()
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
        self._stop_liveness()
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
    - `timeout` (default per request): seconds from asking to the complete answer. Run out
      before the request was sent: `H2QueueTimeout` (not processed); after: `H2Timeout`.
    - `queue_timeout`: at most this long (within `timeout`) waiting for a stream slot or a
      connection; None: all of `timeout`.
    - `connect_timeout`: TCP + TLS + the peer's first SETTINGS.
    - `ping_interval`: a connection that received nothing for this long is PINGed before it
      takes a new stream, and, while answers are due, on a timer; `ping_timeout` later without
      a frame it is abandoned (its streams fail with `H2ConnectionLost`). None: never.
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
        queue_timeout: float | None = None,
        ping_interval: float | None = 10.0,
        ping_timeout: float = 3.0,
    ) -> None:
        parts = urlsplit(origin)
        host = parts.hostname or ""
        if parts.scheme not in ("https", "http") or not host:
            raise ValueError(f"an https origin is required, got {origin[:100]!r}")
        if parts.scheme == "http" and not is_loopback_host(host):
            raise ValueError(f"plain http:// only towards a loopback address, got {origin[:100]!r}")
        self.scheme = parts.scheme
        self.host = host
        default_port = 443 if self.scheme == "https" else 80
        self.port = parts.port or default_port
        self.authority = self.host if self.port == default_port else f"{self.host}:{self.port}"
        if self.scheme == "https":
            if ssl_context is None:
                ssl_context = ssl.create_default_context()
            ssl_context.set_alpn_protocols(["h2"])
        self.ssl_context = ssl_context if self.scheme == "https" else None
        self.max_connections = max_connections
        self.max_streams = max_streams
        self.timeout = timeout
        self.queue_timeout = queue_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
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
        retried (up to `max_refused_retries` times, the later ones after a short pause) within
        `timeout`.
        """
        state = _Attempt()
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                tries = 0
                while True:
                    tries += 1
                    state.sent = False
                    try:
                        if self.queue_timeout is None:
                            connection = await self._acquire()
                        else:
                            async with asyncio.timeout(self.queue_timeout):
                                connection = await self._acquire()
                        return await connection.exchange(method, path, headers, body, state)
                    except H2Refused:
                        state.sent = False
                        if tries > self.max_refused_retries:
                            raise
                    if tries > 1:  # refused again: give the peer a moment (Go's http2 does)
                        await asyncio.sleep(min(0.025 * 2 ** (tries - 2), 0.5))
        except TimeoutError:
            if state.sent:
                raise H2Timeout("sent, but no complete answer in time") from None
            raise H2QueueTimeout("not sent in time (no stream slot, connection or room)") from None

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
            chosen = next((c for c in self._connections if c.available > 0), None)
            if chosen is not None:
                if chosen.suspect(chosen.loop.time()):  # quiet a while: is anyone there?
                    await asyncio.shield(chosen.probe())
                    continue
                chosen.reserved += 1
                return chosen
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
                tls = self.ssl_context is not None
                transport, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    address,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if tls else None,
                )
                ssl_object = transport.get_extra_info("ssl_object")
                if tls and (ssl_object is None or ssl_object.selected_alpn_protocol() != "h2"):
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


class BorrowedInternalMissing(RuntimeError):
    """The installed h2/hpack lacks an internal this module overrides or calls."""


def check_borrowed_internals() -> None:
    """Refuse, naming it, an h2 or hpack whose internals we lean on have moved (pyproject pins
    h2>=4.1,<5, which brings hpack 4): `_H2` overrides `_receive_goaway_frame` (reached through
    h2's frame dispatch table), `open_outbound_streams` and `MAX_CLOSED_STREAMS`; the encoder
    replaces `H2Connection.encoder` and calls `Encoder.add`, `Encoder._encode_table_size_change`,
    `HeaderTable.add`, `.resized`, `.maxsize`. Run once at import."""
    versions = f"installed h2 {h2.__version__}, hpack {hpack.__version__}; pinned h2>=4.1,<5"

    def need(ok: bool, name: str) -> None:
        if not ok:
            raise BorrowedInternalMissing(
                f"kit/push/h2client needs the internal {name}, missing or changed ({versions})"
            )

    need(
        isinstance(H2Connection.__dict__.get("MAX_CLOSED_STREAMS"), int),
        "H2Connection.MAX_CLOSED_STREAMS",
    )
    need(
        isinstance(H2Connection.__dict__.get("open_outbound_streams"), property),
        "H2Connection.open_outbound_streams (a property)",
    )
    goaway = H2Connection.__dict__.get("_receive_goaway_frame")
    need(
        callable(goaway) and list(inspect.signature(goaway).parameters) == ["self", "frame"],
        "H2Connection._receive_goaway_frame(self, frame)",
    )
    connection = _H2(config=_configuration())
    dispatch = getattr(connection, "_frame_dispatch_table", {})
    handler = dispatch.get(GoAwayFrame) if isinstance(dispatch, dict) else None
    need(
        getattr(handler, "__func__", None) is _H2._receive_goaway_frame,
        "H2Connection._frame_dispatch_table[GoAwayFrame] -> _receive_goaway_frame",
    )
    need(isinstance(getattr(connection, "encoder", None), Encoder), "H2Connection.encoder")
    encoder = _PlainEncoder()
    table = encoder.header_table
    need(isinstance(table, _CountingTable), "hpack Encoder.header_table")
    need(
        hasattr(table, "resized") and hasattr(table, "maxsize"),
        "hpack HeaderTable.resized/.maxsize",
    )
    need(
        callable(getattr(Encoder, "_encode_table_size_change", None)),
        "hpack Encoder._encode_table_size_change",
    )
    add = getattr(Encoder, "add", None)
    need(
        callable(add)
        and list(inspect.signature(add).parameters)[:3] == ["self", "to_add", "sensitive"],
        "hpack Encoder.add(self, to_add, sensitive, huffman)",
    )
    # The memo's premise: an indexed field re-encodes to the same bytes, and adding a field
    # goes through HeaderTable.add (counted).
    first = encoder.encode([("x-check", "1")])
    need(getattr(table, "inserts", 0) == 1, "hpack HeaderTable.add (called on insertion)")
    need(encoder.encode([("x-check", "1")]) != first, "hpack Encoder indexing")


check_borrowed_internals()
