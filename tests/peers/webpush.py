"""A local push service (RFC 8030) over HTTPS, HTTP/2 and HTTP/1.1 (hypercorn, a trustme CA).

It checks what a real push service checks: POST /push/<subscription id>, a VAPID Authorization
header (`vapid t=<JWT>, k=<key>`, RFC 8292) whose key is a registered application server key and
whose ES256 JWT verifies with `aud` = this service's origin, `exp` in the future and at most 24 h
away, and `sub` present; `Content-Encoding: aes128gcm`, a TTL header and the 4096-byte limit.
Each payload is decrypted with the subscription's private key by `http_ece` (Mozilla's
implementation, not ours), so a message only counts if a real browser could read it.

Answers are scripted per subscription (201 by default): 404, 410, 413, 429 with Retry-After,
5xx... Every request is recorded. Subscriptions are made with `new_subscription()`, which returns
what a browser's `PushSubscription.toJSON()` would.

Tests serve it with hypercorn (HTTP/2 and HTTP/1.1 by ALPN). For benchmarks it runs as its own
process: `python -m tests.peers.webpush --dir D --vapid-key K --subscription-key F --auth A
[--decrypt-every N] [--http1]`; it prints `ready <url> <ca_file>`, serves HTTP/2 on raw `h2`
(the APNs peer's way: hypercorn's per-stream bookkeeping cost more CPU than the app it
measured), accepts any subscription id as the one bench subscription, checks every request as
above (each distinct VAPID JWT's signature once, as in tests) but decrypts only every Nth
payload, and on SIGTERM prints `verified <json>`: what it checked, so the figures say so.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import http_ece
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.exceptions import ProtocolError, StreamClosedError
from hypercorn.asyncio import serve

from tests.peers.apns import free_port, server_h2, tls_config, tls_context, wait_for_port

MAX_BODY_BYTES = 4096

# (HTTP status, extra response headers)
Answer = tuple[int, dict[str, str]]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class PeerSubscription:
    subscription_id: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes


@dataclass
class Received:
    subscription_id: str
    payload: Any  # decrypted JSON (None when decryption is off)
    headers: dict[str, str]
    vapid_claims: dict[str, Any]
    http_version: str
    body_bytes: int
    answer: int


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class WebPushPeer:
    """The fake push service. Register VAPID public keys (base64url points) in `vapid_keys`."""

    vapid_keys: set[str] = field(default_factory=set)
    subscriptions: dict[str, PeerSubscription] = field(default_factory=dict)
    script: dict[str, list[Answer]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    decrypt: bool = True
    decrypt_every: int = 1  # bench mode only: decrypt every Nth payload (tests: every one)
    any_subscription: PeerSubscription | None = None  # bench mode: serves every id
    record: bool = True
    alpn: tuple[str, ...] = ("h2", "http/1.1")
    ca_file: Path | None = None
    url: str = ""
    count: int = 0
    stats: Counter[str] = field(default_factory=Counter)  # what was checked (bench report)
    # Misbehaviour on raw h2 (`running(raw_h2=True)`): the MAX_CONCURRENT_STREAMS advertised,
    # seconds before each answer, and RST_STREAM(REFUSED_STREAM) for the next N requests.
    max_concurrent_streams: int = 1000
    delay_seconds: float = 0.0
    refuse_streams: int = 0
    refused: int = 0
    _seen: int = 0
    _served: Counter[str] = field(default_factory=Counter)
    # (token, key, origin) -> claims: a given JWT's signature is verified once, as a push
    # service's cache would; its expiry is checked on every request.
    _verified: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def new_subscription(self, expiration_ms: int | None = None) -> dict[str, Any]:
        """A fresh subscription as `PushSubscription.toJSON()` gives it."""
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        subscription_id = b64url(os.urandom(24))
        self.subscriptions[subscription_id] = PeerSubscription(subscription_id, key, auth)
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{self.url}/push/{subscription_id}",
            "expirationTime": expiration_ms,
            "keys": {"p256dh": b64url(point), "auth": b64url(auth)},
        }

    def answer(self, subscription_id: str, *answers: Answer) -> None:
        """Script the answers for a subscription from now on (the last one repeats)."""
        self.script[subscription_id] = list(answers)
        self._served.pop(subscription_id, None)

    def delivered(self, subscription_id: str) -> int:
        return sum(
            1 for r in self.received if r.subscription_id == subscription_id and r.answer == 201
        )

    def attempts(self, subscription_id: str) -> int:
        return sum(1 for r in self.received if r.subscription_id == subscription_id)

    def _next_answer(self, subscription_id: str) -> Answer:
        answers = self.script.get(subscription_id)
        if not answers:
            return (201, {})
        index = min(self._served[subscription_id], len(answers) - 1)
        self._served[subscription_id] += 1
        return answers[index]

    def _check_vapid(self, header: str | None, origin: str) -> dict[str, Any]:
        if not header or not header.lower().startswith("vapid "):
            raise _Rejected(401, "missing vapid authorization")
        params: dict[str, str] = {}
        for part in header[6:].split(","):
            name, _, value = part.strip().partition("=")
            params[name.strip()] = value.strip()
        token, key_text = params.get("t"), params.get("k")
        if not token or not key_text:
            raise _Rejected(401, "vapid header lacks t or k")
        if key_text not in self.vapid_keys:
            raise _Rejected(403, "unknown application server key")
        claims = self._verified.get((token, key_text, origin))
        if claims is None:
            public = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b64url_decode(key_text)
            )
            try:
                claims = jwt.decode(
                    token,
                    public,
                    algorithms=["ES256"],
                    audience=origin,
                    options={"require": ["aud", "exp", "sub"]},
                )
            except jwt.PyJWTError as exc:
                raise _Rejected(403, f"vapid jwt: {exc}") from exc
            self.stats["jwt_signatures_verified"] += 1
            if int(claims["exp"]) > time.time() + 24 * 3600:
                raise _Rejected(403, "vapid exp more than 24 h ahead")
            sub = str(claims["sub"])
            if not (sub.startswith("mailto:") or sub.startswith("https:")):
                raise _Rejected(403, "vapid sub is not mailto: or https:")
            self._verified[(token, key_text, origin)] = claims
        if int(claims["exp"]) <= time.time():
            raise _Rejected(403, "vapid jwt expired")
        self.stats["vapid_checked"] += 1
        return claims

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes, http_version: str
    ) -> tuple[int, dict[str, str]]:
        if method != "POST" or not path.startswith("/push/"):
            raise _Rejected(404, "no such path")
        subscription_id = path.removeprefix("/push/")
        host = headers.get("host") or headers.get(":authority") or ""
        claims = self._check_vapid(headers.get("authorization"), f"https://{host}")
        if headers.get("content-encoding") != "aes128gcm":
            raise _Rejected(400, "content-encoding must be aes128gcm")
        if not headers.get("ttl", "").isdigit():
            raise _Rejected(400, "TTL header required")
        if len(body) > MAX_BODY_BYTES:
            raise _Rejected(413, "payload too large")
        subscription = self.subscriptions.get(subscription_id) or self.any_subscription
        if subscription is None:
            raise _Rejected(404, "unknown subscription")
        payload: Any = None
        self._seen += 1
        if self.decrypt and self._seen % self.decrypt_every == 0:
            try:
                plaintext = http_ece.decrypt(
                    body,
                    private_key=subscription.private_key,
                    auth_secret=subscription.auth_secret,
                    version="aes128gcm",
                )
                payload = orjson.loads(plaintext)
            except Exception as exc:
                raise _Rejected(400, f"cannot decrypt: {exc}") from exc
            self.stats["decrypted_with_http_ece"] += 1
        status, extra = self._next_answer(subscription_id)
        if self.record:
            self.received.append(
                Received(
                    subscription_id=subscription_id,
                    payload=payload,
                    headers=headers,
                    vapid_claims=claims,
                    http_version=http_version,
                    body_bytes=len(body),
                    answer=status,
                )
            )
        return status, extra

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request_headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, extra, content = self.respond(
            scope["method"], scope["path"], request_headers, body, str(scope.get("http_version"))
        )
        headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def respond(
        self, method: str, path: str, headers: dict[str, str], body: bytes, http_version: str
    ) -> tuple[int, dict[str, str], bytes]:
        """Check one request as a push service would: status, response headers, body."""
        try:
            status, extra = self._answer(method, path, headers, body, http_version)
            content = b""
        except _Rejected as rejected:
            status, extra = rejected.status, {}
            content = rejected.reason.encode()
            self.rejected.append(rejected.reason)
        self.count += 1
        self.stats[f"answered_{status}"] += 1
        if status == 201:
            extra = {**extra, "location": "/message/1"}
        return status, extra, content

    @contextlib.asynccontextmanager
    async def running(
        self, directory: Path, port: int | None = None, raw_h2: bool = False
    ) -> AsyncIterator[WebPushPeer]:
        """Serve on 127.0.0.1 with a fresh test CA; `ca_file` is what clients must trust.

        `raw_h2`: HTTP/2 only, on `h2` directly (benchmarks); else hypercorn, by `alpn`."""
        if raw_h2:
            context, self.ca_file = tls_context(directory)
            loop = asyncio.get_running_loop()
            server = await loop.create_server(
                lambda: _H2PeerConnection(self), "127.0.0.1", port or 0, ssl=context, backlog=512
            )
            self.url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            try:
                yield self
            finally:
                server.close()
                await server.wait_closed()
            return
        config, self.ca_file = tls_config(directory, port or free_port())
        config.alpn_protocols = list(self.alpn)
        self.url = f"https://127.0.0.1:{config.bind[0].rsplit(':', 1)[1]}"
        stop = asyncio.Event()
        task = asyncio.create_task(serve(self, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        try:
            await wait_for_port(self.url)
            yield self
        finally:
            stop.set()
            with contextlib.suppress(asyncio.InvalidStateError):
                await asyncio.wait_for(task, 10)


class _H2PeerConnection(asyncio.Protocol):
    """One HTTP/2 client connection served on `h2` directly; answers go out in one write per
    read, as a server that batches would."""

    def __init__(self, peer: WebPushPeer) -> None:
        self.peer = peer
        self.h2 = server_h2(peer.max_concurrent_streams)
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, tuple[dict[str, str], bytearray]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError:
            if self.transport is not None:
                self.transport.write(self.h2.data_to_send())
                self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.requests[event.stream_id] = (dict(event.headers or []), bytearray())  # type: ignore[arg-type]
            elif isinstance(event, DataReceived):
                request = self.requests.get(event.stream_id)
                if request is not None:
                    request[1].extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                if self.peer.refuse_streams > 0:  # not processed: the client may send it again
                    self.peer.refuse_streams -= 1
                    self.peer.refused += 1
                    self.requests.pop(event.stream_id, None)
                    with contextlib.suppress(StreamClosedError, ProtocolError):
                        self.h2.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
                elif self.peer.delay_seconds > 0:
                    asyncio.get_running_loop().call_later(
                        self.peer.delay_seconds, self._respond_now, event.stream_id
                    )
                else:
                    self._respond(event.stream_id)
            elif isinstance(event, StreamReset):
                self.requests.pop(event.stream_id, None)
            elif isinstance(event, ConnectionTerminated):
                if self.transport is not None:
                    self.transport.close()
                return
        self._write()

    def _write(self) -> None:
        data_out = self.h2.data_to_send()
        if data_out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data_out)

    def _respond_now(self, stream_id: int) -> None:
        self._respond(stream_id)
        self._write()

    def _respond(self, stream_id: int) -> None:
        request = self.requests.pop(stream_id, None)
        if request is None:
            return
        headers, body = request
        status, extra, content = self.peer.respond(
            headers.get(":method", ""), headers.get(":path", ""), headers, bytes(body), "2"
        )
        response = [(":status", str(status)), *extra.items()]
        with contextlib.suppress(StreamClosedError, ProtocolError):
            self.h2.send_headers(stream_id, response, end_stream=not content)
            if content:
                self.h2.send_data(stream_id, content, end_stream=True)


def main() -> None:
    """Standalone peer for benchmarks: prints `ready <url> <ca_file>`, serves until SIGTERM,
    then prints `verified <json>` (requests answered, VAPID headers checked, distinct JWT
    signatures verified, payloads decrypted with http_ece, rejections)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--vapid-key", required=True)
    parser.add_argument(
        "--subscription-key",
        type=Path,
        required=True,
        help="PEM private key of the one bench subscription (every id maps to it)",
    )
    parser.add_argument("--auth", required=True, help="its auth secret, base64url")
    parser.add_argument(
        "--decrypt-every", type=int, default=1, help="decrypt every Nth payload (default 1: all)"
    )
    parser.add_argument("--http1", action="store_true", help="offer HTTP/1.1 only (no h2)")
    args = parser.parse_args()
    key = serialization.load_pem_private_key(args.subscription_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    async def run() -> None:
        peer = WebPushPeer(
            vapid_keys={args.vapid_key},
            record=False,
            decrypt_every=max(1, args.decrypt_every),
            any_subscription=PeerSubscription("bench", key, b64url_decode(args.auth)),
            alpn=("http/1.1",) if args.http1 else ("h2", "http/1.1"),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        async with peer.running(args.dir, args.port or None, raw_h2=not args.http1):
            print(f"ready {peer.url} {peer.ca_file}", flush=True)
            await stop.wait()
        report = {
            "served": peer.count,
            "decrypt_every": peer.decrypt_every,
            **dict(peer.stats),
            "rejections": dict(Counter(peer.rejected).most_common(5)),
        }
        print(f"verified {orjson.dumps(report).decode()}", flush=True)

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


if __name__ == "__main__":
    main()
