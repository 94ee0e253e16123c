"""The Web Push H2 engine against the push-service peer (raw h2) misbehaving on purpose:
refused streams are sent again, and a request that never left the queue is told apart from one
whose answer came late, and retried as never sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stateless.webpush.sender import (
    WEBPUSH_RETRY,
    Endpoint,
    EngineError,
    EngineResponse,
    H2Engine,
    Headers,
    HttpcoreEngine,
    WebPushSender,
    build_ssl_context,
)
from tests.peers.webpush import WebPushPeer

HEADERS = [("ttl", "60"), ("content-encoding", "aes128gcm")]


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[WebPushPeer]:
    async with WebPushPeer().running(tmp_path, raw_h2=True) as running:
        yield running


def _engine(peer: WebPushPeer, timeout_seconds: float = 5.0) -> H2Engine:
    assert peer.ca_file is not None
    return H2Engine(
        ssl_context=build_ssl_context(peer.ca_file),
        allow_private=True,
        fallback=HttpcoreEngine(ssl_context=build_ssl_context(peer.ca_file), allow_private=True),
        timeout_seconds=timeout_seconds,
    )


async def test_refused_streams_are_sent_again(peer: WebPushPeer) -> None:
    peer.refuse_streams = 2
    engine = _engine(peer)
    try:
        answer = await engine.post(Endpoint.parse(f"{peer.url}/push/unknown"), b"x", HEADERS)
    finally:
        await engine.aclose()
    assert peer.refused == 2
    assert 400 <= answer.status < 500  # answered (the peer refuses the unknown subscription)


async def test_a_queued_request_times_out_as_never_sent(peer: WebPushPeer) -> None:
    """One stream per connection, answers after 1 s: with both connections busy (requests of
    the same client with more patience), a request waits in the queue and is reported as never
    sent; one that was sent and answered late is a plain timeout."""
    peer.max_concurrent_streams = 1
    peer.delay_seconds = 1.0
    engine = _engine(peer, timeout_seconds=0.3)
    endpoint = Endpoint.parse(f"{peer.url}/push/unknown")
    try:
        with pytest.raises(EngineError, match=r"^Timeout$"):
            await engine.post(endpoint, b"x", HEADERS)
        client = engine._client(endpoint.origin)
        assert client is not None
        busy = [
            asyncio.create_task(client.request("POST", endpoint.path, HEADERS, b"x", timeout=5))
            for _ in range(2)
        ]
        await asyncio.sleep(0.2)
        assert len(client._connections) == 2
        with pytest.raises(EngineError, match=r"^QueueTimeout$"):
            await engine.post(endpoint, b"x", HEADERS)
        assert [(await task).status for task in busy] == [401, 401]  # answered (no VAPID)
    finally:
        await engine.aclose()


class _QueuedOnce:
    """An engine whose first attempt never left the queue."""

    def __init__(self) -> None:
        self.calls = 0

    async def post(self, endpoint: Endpoint, body: bytes, headers: Headers) -> EngineResponse:
        self.calls += 1
        if self.calls == 1:
            raise EngineError("QueueTimeout")
        return EngineResponse(201)

    async def aclose(self) -> None:
        return None


async def test_the_sender_sends_a_queue_timeout_again() -> None:
    engine = _QueuedOnce()
    sender = WebPushSender(engine, retry=WEBPUSH_RETRY.without_sleep())
    outcome = await sender.send(
        "app", Endpoint.parse("https://push.example.com/x"), b"x", lambda: HEADERS
    )
    assert outcome.delivered and outcome.attempts == 2
