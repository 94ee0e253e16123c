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

For benchmarks run it as its own process: `python -m tests.peers.webpush --dir D --port P
--vapid-key K [--no-decrypt]`; it prints `ready <url> <ca_file>`. Without decryption (the
peer's own CPU must not be the bottleneck of a throughput figure) it still verifies VAPID.
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
from typing import Any

import http_ece
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio import serve

from tests.peers.apns import free_port, tls_config, wait_for_port

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
    record: bool = True
    alpn: tuple[str, ...] = ("h2", "http/1.1")
    ca_file: Path | None = None
    url: str = ""
    count: int = 0
    _served: Counter[str] = field(default_factory=Counter)
    _verified: dict[str, dict[str, Any]] = field(default_factory=dict)

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
        claims = self._verified.get(token)
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
            if int(claims["exp"]) > time.time() + 24 * 3600:
                raise _Rejected(403, "vapid exp more than 24 h ahead")
            sub = str(claims["sub"])
            if not (sub.startswith("mailto:") or sub.startswith("https:")):
                raise _Rejected(403, "vapid sub is not mailto: or https:")
            self._verified[token] = claims
        return claims

    def _answer(self, scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, str]]:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["method"] != "POST" or not scope["path"].startswith("/push/"):
            raise _Rejected(404, "no such path")
        subscription_id = scope["path"].removeprefix("/push/")
        host = headers.get("host") or headers.get(":authority") or ""
        claims = self._check_vapid(headers.get("authorization"), f"https://{host}")
        if headers.get("content-encoding") != "aes128gcm":
            raise _Rejected(400, "content-encoding must be aes128gcm")
        if not headers.get("ttl", "").isdigit():
            raise _Rejected(400, "TTL header required")
        if len(body) > MAX_BODY_BYTES:
            raise _Rejected(413, "payload too large")
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            raise _Rejected(404, "unknown subscription")
        payload: Any = None
        if self.decrypt:
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
        status, extra = self._next_answer(subscription_id)
        if self.record:
            self.received.append(
                Received(
                    subscription_id=subscription_id,
                    payload=payload,
                    headers=headers,
                    vapid_claims=claims,
                    http_version=str(scope.get("http_version")),
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
        try:
            status, extra = self._answer(scope, body)
            content = b""
        except _Rejected as rejected:
            status, extra = rejected.status, {}
            content = rejected.reason.encode()
            self.rejected.append(rejected.reason)
        self.count += 1
        headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        if status == 201:
            headers.append((b"location", b"/message/1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    @contextlib.asynccontextmanager
    async def running(self, directory: Path, port: int | None = None) -> AsyncIterator[WebPushPeer]:
        """Serve on 127.0.0.1 with a fresh test CA; `ca_file` is what clients must trust."""
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


def main() -> None:
    """Standalone peer for benchmarks: prints `ready <url> <ca_file>` then serves until SIGTERM.

    Subscriptions are accepted by any id (`/push/<anything>`) when decryption is off."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--vapid-key", required=True)
    parser.add_argument("--no-decrypt", action="store_true")
    parser.add_argument("--http1", action="store_true", help="offer HTTP/1.1 only (no h2)")
    args = parser.parse_args()

    class BenchPeer(WebPushPeer):
        def _answer(self, scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, str]]:
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            host = headers.get("host") or ""
            self._check_vapid(headers.get("authorization"), f"https://{host}")
            if len(body) > MAX_BODY_BYTES:
                raise _Rejected(413, "payload too large")
            return (201, {})

    async def run() -> None:
        peer_class = BenchPeer if args.no_decrypt else WebPushPeer
        peer = peer_class(
            vapid_keys={args.vapid_key},
            record=False,
            decrypt=not args.no_decrypt,
            alpn=("http/1.1",) if args.http1 else ("h2", "http/1.1"),
        )
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
