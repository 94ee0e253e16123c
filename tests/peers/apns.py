"""A local APNs: HTTP/2 over TLS (raw `h2` on asyncio, a test CA from trustme).

It checks what Apple checks (HTTP/2, POST /3/device/<hex token>, an ES256 provider JWT signed by
a registered key with the right team id, an allowed apns-topic, the 4 KB payload limit),
answers scripted results per token, and records every request it received.

It also misbehaves on demand, as a real server may: it advertises the MAX_CONCURRENT_STREAMS
and INITIAL_WINDOW_SIZE it is given (and h2 enforces them: a client that opens more streams or
sends more body bytes than allowed breaks its connection), delays answers per token, sends
GOAWAY after N requests on a connection (graceful: finishes streams up to last_stream_id and
ignores the later ones; abrupt: GOAWAY with an error and an immediate close), or closes the
connection without a word, goes silent (reads and ignores everything, PINGs included: a
half-open connection), stops reading its socket (the client's writes back up), refuses streams
with RST_STREAM(REFUSED_STREAM), or puts debug data in its GOAWAY. A request the peer drops or whose client cancelled it before the
answer is not recorded: "recorded with 200" is "delivered".

Run in-process with `async with ApnsPeer(...).running(tmp_dir)`, or as a separate process for
benchmarks: `python -m tests.peers.apns --dir D --port P --team T --kid K --public-key F --topic X`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import socket
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import jwt
import orjson
import trustme
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

if TYPE_CHECKING:
    from hypercorn.config import Config

TOKEN_PATH = re.compile(r"^/3/device/([0-9a-fA-F]{64,200})$")
MAX_PAYLOAD_BYTES = 4096

# (HTTP status, APNs reason or None)
Answer = tuple[int, str | None]


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.answer: Answer = (status, reason)


@dataclass(frozen=True)
class PeerKey:
    team_id: str
    public_key: ec.EllipticCurvePublicKey
    topics: frozenset[str]


@dataclass
class Received:
    token: str
    topic: str | None
    push_type: str | None
    priority: str | None
    expiration: str | None
    collapse_id: str | None
    payload: dict[str, Any]
    jwt: str
    iat: int
    http_version: str
    answer: Answer
    at: float = 0.0  # time.monotonic() when answered


@dataclass
class ApnsPeer:
    """The fake APNs. `keys` maps a key id (JWT `kid`) to its team, public key and topics."""

    keys: dict[str, PeerKey] = field(default_factory=dict)
    # Answers per token, used in order; the last one repeats. Unknown tokens get 200.
    script: dict[str, list[Answer]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    record: bool = True
    ca_file: Path | None = None
    url: str = ""
    _served: Counter[str] = field(default_factory=Counter)
    _verified: dict[str, tuple[str, int]] = field(default_factory=dict)
    count: int = 0
    # What the peer advertises (h2 enforces it on every connection).
    max_concurrent_streams: int = 1000  # what Apple allows per connection
    initial_window_size: int = 65535
    header_table_size: int = 4096  # the HPACK table a client may fill (SETTINGS_HEADER_TABLE_SIZE)
    # Seconds to wait before answering, per token (used in order, the last repeats) or for all.
    delays: dict[str, list[float]] = field(default_factory=dict)
    delay_seconds: float = 0.0
    # Retry-After (seconds, as text) sent with every 429 and 503 answer, when set.
    retry_after: str | None = None
    # Misbehaviour per connection, after this many requests answered on it (None: never).
    goaway_after: int | None = None  # graceful GOAWAY(NO_ERROR, last_stream_id=that stream)
    goaway_abrupt_after: int | None = None  # GOAWAY(INTERNAL_ERROR) and close at once
    close_after: int | None = None  # close the TCP connection without GOAWAY
    silent_after: int | None = None  # then read and ignore everything, never answer (half-open)
    stop_reading_after: int | None = None  # then stop reading the socket at all
    refuse_streams: int = 0  # RST_STREAM(REFUSED_STREAM) the next N requests (not processed)
    goaway_debug: bytes = b""  # GOAWAY's additional debug data
    connection_window: int = 0  # more connection-level window for the client's bodies
    misbehave_connections: int = 10**9  # how many connections misbehave (then it stops)
    # Observations.
    connections: int = 0
    goaways: int = 0
    answered_after_goaway: int = 0  # streams <= last_stream_id finished after a GOAWAY
    max_open_streams: int = 0  # the most concurrent streams a client held on one connection
    refused: int = 0  # streams refused with REFUSED_STREAM
    pings: int = 0  # PINGs received (and ACKed, unless silent)
    protocol_errors: list[str] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)  # per topic, now
    max_in_flight: Counter[str] = field(default_factory=Counter)  # per topic, ever
    _delays_served: Counter[str] = field(default_factory=Counter)
    _open: set[_PeerConnection] = field(default_factory=set)

    def add_key(self, key_id: str, team_id: str, public_pem: bytes, topics: set[str]) -> None:
        key = load_pem_public_key(public_pem)
        assert isinstance(key, ec.EllipticCurvePublicKey)
        self.keys[key_id] = PeerKey(team_id, key, frozenset(topics))

    def answer(self, token: str, *answers: Answer) -> None:
        """Script the answers for a token from now on (the last one repeats)."""
        self.script[token] = list(answers)
        self._served.pop(token, None)

    def attempts(self, token: str) -> int:
        """How many requests for this token the peer processed (answered)."""
        return sum(1 for r in self.received if r.token == token)

    def delivered(self, token: str) -> int:
        """How many times this token got a 200."""
        return sum(1 for r in self.received if r.token == token and r.answer[0] == 200)

    def _next_answer(self, token: str) -> Answer:
        answers = self.script.get(token)
        if not answers:
            return (200, None)
        index = min(self._served[token], len(answers) - 1)
        self._served[token] += 1
        return answers[index]

    def _delay_for(self, token: str | None) -> float:
        delays = self.delays.get(token or "")
        if not delays:
            return self.delay_seconds
        index = min(self._delays_served[token or ""], len(delays) - 1)
        self._delays_served[token or ""] += 1
        return delays[index]

    def _check_jwt(self, header_value: str | None) -> tuple[str, int, PeerKey]:
        """Verify the provider token as APNs does; raise _Rejected with APNs' answer if bad."""
        if not header_value or not header_value.lower().startswith("bearer "):
            raise _Rejected(403, "MissingProviderToken")
        token = header_value[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _Rejected(403, "InvalidProviderToken") from exc
        key = self.keys.get(str(header.get("kid")))
        if key is None or header.get("alg") != "ES256":
            raise _Rejected(403, "InvalidProviderToken")
        cached = self._verified.get(token)
        if cached is None:
            try:
                claims = jwt.decode(
                    token,
                    key.public_key,
                    algorithms=["ES256"],
                    options={"require": ["iss", "iat"], "verify_iat": False},
                )
            except jwt.PyJWTError as exc:
                raise _Rejected(403, "InvalidProviderToken") from exc
            cached = (str(claims["iss"]), int(claims["iat"]))
            self._verified[token] = cached  # the signature of a given string verifies once
        issuer, iat = cached
        if issuer != key.team_id:
            raise _Rejected(403, "InvalidProviderToken")
        return (token, iat, key)

    def _answer(self, headers: dict[str, str], body: bytes) -> Answer:
        if headers.get(":method") != "POST":
            return (405, "MethodNotAllowed")
        match = TOKEN_PATH.fullmatch(headers.get(":path", ""))
        if match is None:
            return (400, "BadDeviceToken")
        provider_jwt, iat, key = self._check_jwt(headers.get("authorization"))
        topic = headers.get("apns-topic")
        if topic is None:
            return (400, "MissingTopic")
        if topic not in key.topics:
            return (400, "TopicDisallowed")
        if len(body) > MAX_PAYLOAD_BYTES:
            return (413, "PayloadTooLarge")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return (400, "PayloadEmpty")
        token = match.group(1)
        answer = self._next_answer(token)
        if self.record:
            self.received.append(
                Received(
                    token=token,
                    topic=topic,
                    push_type=headers.get("apns-push-type"),
                    priority=headers.get("apns-priority"),
                    expiration=headers.get("apns-expiration"),
                    collapse_id=headers.get("apns-collapse-id"),
                    payload=payload,
                    jwt=provider_jwt,
                    iat=iat,
                    http_version="2",
                    answer=answer,
                    at=time.monotonic(),
                )
            )
        return answer

    def respond(self, headers: dict[str, str], body: bytes) -> Answer:
        """Check one request as APNs would, record it, and say what to answer."""
        try:
            answer = self._answer(headers, body)
        except _Rejected as rejected:
            answer = rejected.answer
        self.count += 1
        return answer

    @contextlib.asynccontextmanager
    async def running(
        self, directory: Path, port: int | None = None, tls: bool = True
    ) -> AsyncIterator[ApnsPeer]:
        """Serve on 127.0.0.1 with a fresh test CA; `ca_file` is what clients must trust.
        `tls=False`: HTTP/2 with prior knowledge on plain TCP (`http://`, loopback only)."""
        context: ssl.SSLContext | None = None
        if tls:
            context, self.ca_file = tls_context(directory)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _PeerConnection(self), "127.0.0.1", port or 0, ssl=context, backlog=512
        )
        bound = server.sockets[0].getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{bound}"
        try:
            yield self
        finally:
            server.close()
            for connection in list(self._open):
                connection.drop()
            await server.wait_closed()


def server_h2(
    max_concurrent_streams: int = 1000,
    initial_window_size: int = 65535,
    header_table_size: int = 4096,
) -> H2Connection:
    """The server side of one HTTP/2 connection, checking what clients send (h2 validates
    every inbound header) and advertising these SETTINGS, which h2 then enforces."""
    h2 = H2Connection(
        H2Configuration(client_side=False, header_encoding="utf-8", validate_inbound_headers=True)
    )
    h2.local_settings = Settings(
        client=False,
        initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: initial_window_size,
            SettingCodes.HEADER_TABLE_SIZE: header_table_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: 16384,
        },
    )
    return h2


class _PeerConnection(asyncio.Protocol):
    """One client connection: h2 server side, requests answered (maybe later), misbehaviour."""

    def __init__(self, peer: ApnsPeer) -> None:
        self.peer = peer
        self.loop = asyncio.get_running_loop()
        self.h2 = server_h2(
            peer.max_concurrent_streams, peer.initial_window_size, peer.header_table_size
        )
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.pending: set[int] = set()  # complete requests not answered yet
        self.answered = 0
        self.last_stream_id: int | None = None  # set once GOAWAY is sent
        self.highest_accepted = 0  # the last stream taken for processing
        self.number = 0  # this connection's rank among the peer's connections
        self.closed = False
        self.silent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        ssl_object = transport.get_extra_info("ssl_object")
        plain = transport.get_extra_info("sslcontext") is None and ssl_object is None
        if not plain and (ssl_object is None or ssl_object.selected_alpn_protocol() != "h2"):
            self.transport.close()  # APNs speaks HTTP/2 only
            self.closed = True
            return
        self.peer.connections += 1
        self.number = self.peer.connections
        self.peer._open.add(self)
        self.h2.initiate_connection()
        if self.peer.connection_window:
            self.h2.increment_flow_control_window(self.peer.connection_window)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.peer._open.discard(self)
        for stream_id in list(self.requests):
            self._forget(stream_id)

    def data_received(self, data: bytes) -> None:
        if self.silent:
            return  # half-open: the bytes arrive, nothing ever answers
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:  # the client broke the rules (streams, windows...)
            self.peer.protocol_errors.append(f"{type(exc).__name__}: {exc}")
            self._flush()
            self.drop()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.requests[event.stream_id] = (dict(event.headers or []), bytearray())  # type: ignore[arg-type]
                opened = len(self.requests)
                self.peer.max_open_streams = max(self.peer.max_open_streams, opened)
            elif isinstance(event, DataReceived):
                request = self.requests.get(event.stream_id)
                if request is not None:
                    request[1].extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self._complete(event.stream_id)
            elif isinstance(event, StreamReset):
                self._forget(event.stream_id)
            elif isinstance(event, PingReceived):
                self.peer.pings += 1
            elif isinstance(event, ConnectionTerminated):
                self.drop()
                return
        self._flush()

    def _topic(self, stream_id: int) -> str:
        request = self.requests.get(stream_id)
        return request[0].get("apns-topic", "") if request else ""

    def _forget(self, stream_id: int) -> None:
        if stream_id in self.pending:
            self.pending.discard(stream_id)
            self.peer.in_flight[self._topic(stream_id)] -= 1
        self.requests.pop(stream_id, None)

    def _complete(self, stream_id: int) -> None:
        if self.last_stream_id is not None and stream_id > self.last_stream_id:
            self.requests.pop(stream_id, None)  # after our GOAWAY: ignored, never processed
            return
        if self.peer.refuse_streams > 0:  # not processed: the client may send it again
            self.peer.refuse_streams -= 1
            self.peer.refused += 1
            self.requests.pop(stream_id, None)
            with contextlib.suppress(StreamClosedError, ProtocolError):
                self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        headers, _ = self.requests[stream_id]
        topic = headers.get("apns-topic", "")
        self.highest_accepted = max(self.highest_accepted, stream_id)
        self.pending.add(stream_id)
        self.peer.in_flight[topic] += 1
        self.peer.max_in_flight[topic] = max(
            self.peer.max_in_flight[topic], self.peer.in_flight[topic]
        )
        match = TOKEN_PATH.fullmatch(headers.get(":path", ""))
        delay = self.peer._delay_for(match.group(1) if match else None)
        if delay > 0:
            self.loop.call_later(delay, self._answer, stream_id)
        else:
            self._answer(stream_id)

    def _answer(self, stream_id: int) -> None:
        if self.closed or self.silent or stream_id not in self.pending:
            return  # the client cancelled it, or the connection is gone: not delivered
        headers, body = self.requests[stream_id]
        self._forget(stream_id)
        status, reason = self.peer.respond(headers, bytes(body))
        content = b"" if status == 200 else orjson.dumps({"reason": reason})
        # Apple echoes the client's apns-id (clients match answers by it), else makes one up.
        apns_id = headers.get("apns-id", "00000000-0000-0000-0000-000000000000")
        response = [(":status", str(status)), ("apns-id", apns_id)]
        if self.peer.retry_after is not None and status in (429, 503):
            response.append(("retry-after", self.peer.retry_after))
        try:
            self.h2.send_headers(stream_id, response, end_stream=not content)
            if content:
                self.h2.send_data(stream_id, content, end_stream=True)
        except (StreamClosedError, ProtocolError):
            return
        self.answered += 1
        if self.last_stream_id is not None:
            self.peer.answered_after_goaway += 1
        self._misbehave()
        self._flush()

    def _misbehave(self) -> None:
        peer = self.peer
        if self.number > peer.misbehave_connections or self.last_stream_id is not None:
            return
        # GOAWAY names the last stream taken for processing: the ones up to it are answered
        # (graceful) and every later one is ignored, so a client may safely send those again.
        if peer.goaway_after is not None and self.answered >= peer.goaway_after:
            self._goaway(self.highest_accepted, ErrorCodes.NO_ERROR)
        elif peer.goaway_abrupt_after is not None and self.answered >= peer.goaway_abrupt_after:
            self._goaway(self.highest_accepted, ErrorCodes.INTERNAL_ERROR)
            self._flush()
            self.drop()
        elif peer.close_after is not None and self.answered >= peer.close_after:
            self._flush()
            self.drop()
        elif peer.silent_after is not None and self.answered >= peer.silent_after:
            self._flush()
            self.silent = True
        elif peer.stop_reading_after is not None and self.answered >= peer.stop_reading_after:
            self._flush()
            if self.transport is not None:
                self.transport.pause_reading()

    def _goaway(self, last_stream_id: int, code: ErrorCodes) -> None:
        """Written by hand: h2's close_connection() would stop us answering earlier streams."""
        self.last_stream_id = last_stream_id
        self.peer.goaways += 1
        frame = GoAwayFrame(
            0,
            last_stream_id=last_stream_id,
            error_code=int(code),
            additional_data=self.peer.goaway_debug,
        )
        if self.transport is not None:
            self._flush()
            self.transport.write(frame.serialize())
        for stream_id in [s for s in self.requests if s > last_stream_id]:
            self._forget(stream_id)
        if code == ErrorCodes.NO_ERROR:
            self.loop.call_later(0.05, self._close_when_drained)

    def _close_when_drained(self) -> None:
        if self.closed:
            return
        if self.pending:
            self.loop.call_later(0.05, self._close_when_drained)
        else:
            self.drop()

    def drop(self) -> None:
        """Close the connection now (after writing whatever is already queued)."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed and not self.silent:
            self.transport.write(data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_port(url: str, timeout: float = 10.0) -> None:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
        else:
            writer.close()
            await writer.wait_closed()
            return


def tls_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1/localhost from a fresh trustme CA, offering only h2."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = directory / "apns-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    context.set_alpn_protocols(["h2"])
    return context, ca_file


def tls_config(directory: Path, port: int) -> tuple[Config, Path]:
    """A hypercorn TLS config (h2 only) with a fresh test CA, for peers served by hypercorn."""
    from hypercorn.config import Config

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = directory / "apns-ca.pem"
    cert_file = directory / "apns-cert.pem"
    key_file = directory / "apns-key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile = str(cert_file)
    config.keyfile = str(key_file)
    config.alpn_protocols = ["h2"]
    config.h2_max_concurrent_streams = 1000  # what Apple allows per connection
    config.accesslog = None  # paths carry device tokens
    config.errorlog = None
    config.keep_alive_timeout = 60
    config.graceful_timeout = 1
    config.keep_alive_max_requests = 10**9  # APNs keeps a connection for hours
    return config, ca_file


def main() -> None:
    """Standalone peer for benchmarks: prints `ready <url> <ca_file>` then serves until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--team", required=True)
    parser.add_argument("--kid", required=True)
    parser.add_argument("--public-key", type=Path, required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()

    async def run() -> None:
        peer = ApnsPeer(record=False)
        peer.add_key(args.kid, args.team, args.public_key.read_bytes(), {args.topic})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        async with peer.running(args.dir, args.port or None):
            print(f"ready {peer.url} {peer.ca_file}", flush=True)
            await stop.wait()
            print(f"served {peer.count}", flush=True)

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


if __name__ == "__main__":
    main()
