"""A local APNs: HTTP/2 over TLS (hypercorn, a test CA from trustme) speaking Apple's protocol.

It checks what Apple checks (HTTP/2, POST /3/device/<hex token>, an ES256 provider JWT signed by
a registered key with the right team id, an allowed apns-topic, the 4 KB payload limit),
answers scripted results per token, and records every request it received.

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
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import trustme
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hypercorn.asyncio import serve
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

    def add_key(self, key_id: str, team_id: str, public_pem: bytes, topics: set[str]) -> None:
        key = load_pem_public_key(public_pem)
        assert isinstance(key, ec.EllipticCurvePublicKey)
        self.keys[key_id] = PeerKey(team_id, key, frozenset(topics))

    def answer(self, token: str, *answers: Answer) -> None:
        """Script the answers for a token from now on (the last one repeats)."""
        self.script[token] = list(answers)
        self._served.pop(token, None)

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
            answer = self._answer(scope, body)
        except _Rejected as rejected:
            answer = rejected.answer
        self.count += 1
        content = b"" if answer[0] == 200 else orjson.dumps({"reason": answer[1]})
        await send(
            {
                "type": "http.response.start",
                "status": answer[0],
                "headers": [(b"apns-id", b"00000000-0000-0000-0000-000000000000")],
            }
        )
        await send({"type": "http.response.body", "body": content})

    def _answer(self, scope: dict[str, Any], body: bytes) -> Answer:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope.get("http_version") != "2":
            return (400, "HTTP2Required")
        if scope["method"] != "POST":
            return (405, "MethodNotAllowed")
        match = TOKEN_PATH.fullmatch(scope["path"])
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
                    http_version=str(scope.get("http_version")),
                    answer=answer,
                )
            )
        return answer

    @contextlib.asynccontextmanager
    async def running(self, directory: Path, port: int | None = None) -> AsyncIterator[ApnsPeer]:
        """Serve on 127.0.0.1 with a fresh test CA; `ca_file` is what clients must trust."""
        config, self.ca_file = tls_config(directory, port or free_port())
        self.url = f"https://127.0.0.1:{config.bind[0].rsplit(':', 1)[1]}"
        stop = asyncio.Event()
        task = asyncio.create_task(serve(self, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        try:
            await wait_for_port(self.url)
            yield self
        finally:
            stop.set()
            # hypercorn 0.18 raises InvalidStateError when its graceful timeout cancels a
            # connection that a client still holds open; the server is stopped all the same.
            with contextlib.suppress(asyncio.InvalidStateError):
                await asyncio.wait_for(task, 10)


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


def tls_config(directory: Path, port: int) -> tuple[Config, Path]:
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
