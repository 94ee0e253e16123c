"""kit/push/h2client.py against an APNs peer that misbehaves on purpose: a full queue, refused
streams, a half-open connection, GOAWAY with a reason, a peer that stops reading, h2c on
loopback, and the guard on the h2/hpack internals the client leans on."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from h2.connection import H2Connection

from stateless.kit.push import h2client
from stateless.kit.push.h2client import (
    BorrowedInternalMissing,
    H2Client,
    H2ConnectionLost,
    H2QueueTimeout,
    H2Refused,
    H2Timeout,
)
from tests.ios.conftest import ApnsKey, hex_token, make_peer
from tests.ios.test_h2client import apns_headers
from tests.peers.apns import ApnsPeer

PAYLOAD = b'{"aps":{}}'


@pytest.fixture
async def client(apns_peer: ApnsPeer) -> AsyncIterator[H2Client]:
    assert apns_peer.ca_file is not None
    context = ssl.create_default_context(cafile=str(apns_peer.ca_file))
    client = H2Client(apns_peer.url, ssl_context=context, ping_interval=0.3, ping_timeout=0.3)
    yield client
    await client.aclose()


async def test_waiting_for_a_stream_slot_times_out_as_not_processed(
    apns_peer: ApnsPeer, apns_key: ApnsKey, client: H2Client
) -> None:
    apns_peer.max_concurrent_streams = 1
    client.max_connections = 1
    slow, queued = hex_token(1), hex_token(2)
    apns_peer.delays[slow] = [1.0]
    headers = apns_headers(apns_key)
    await client.request("POST", f"/3/device/{hex_token(3)}", headers, PAYLOAD)  # connected
    first = asyncio.create_task(client.request("POST", f"/3/device/{slow}", headers, PAYLOAD))
    await asyncio.sleep(0.05)
    with pytest.raises(H2QueueTimeout) as caught:
        await client.request("POST", f"/3/device/{queued}", headers, PAYLOAD, timeout=0.3)
    assert not caught.value.processed  # never sent: safe to send again
    assert (await first).status == 200
    assert apns_peer.attempts(queued) == 0
    # A separate, shorter bound on the queue than on the whole exchange.
    client.queue_timeout = 0.2
    second = asyncio.create_task(client.request("POST", f"/3/device/{slow}", headers, PAYLOAD))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(H2QueueTimeout):
        await client.request("POST", f"/3/device/{queued}", headers, PAYLOAD, timeout=5)
    assert time.monotonic() - started < 1.0
    assert (await second).status == 200


async def test_an_answer_that_comes_too_late_is_a_timeout_that_may_have_been_processed(
    apns_peer: ApnsPeer, apns_key: ApnsKey, client: H2Client
) -> None:
    apns_peer.delays[hex_token(1)] = [1.0]
    with pytest.raises(H2Timeout) as caught:
        await client.request(
            "POST", f"/3/device/{hex_token(1)}", apns_headers(apns_key), PAYLOAD, timeout=0.3
        )
    assert caught.value.processed


async def test_refused_streams_are_sent_again_and_delivered_once(
    apns_peer: ApnsPeer, apns_key: ApnsKey, client: H2Client
) -> None:
    apns_peer.refuse_streams = 2
    token = hex_token(1)
    response = await client.request("POST", f"/3/device/{token}", apns_headers(apns_key), PAYLOAD)
    assert response.status == 200
    assert apns_peer.refused == 2 and apns_peer.delivered(token) == 1
    assert client.connections_opened == 1  # REFUSED_STREAM says nothing bad of the connection
    # Refused more often than max_refused_retries: reported, as never processed.
    apns_peer.refuse_streams = client.max_refused_retries + 1
    with pytest.raises(H2Refused) as caught:
        await client.request("POST", f"/3/device/{hex_token(2)}", apns_headers(apns_key), PAYLOAD)
    assert not caught.value.processed and apns_peer.attempts(hex_token(2)) == 0


async def test_a_quiet_connection_is_pinged_before_reuse_and_kept_when_it_answers(
    apns_peer: ApnsPeer, apns_key: ApnsKey, client: H2Client
) -> None:
    headers = apns_headers(apns_key)
    await client.request("POST", f"/3/device/{hex_token(1)}", headers, PAYLOAD)
    await asyncio.sleep(0.4)  # quiet longer than ping_interval
    response = await client.request("POST", f"/3/device/{hex_token(2)}", headers, PAYLOAD)
    assert response.status == 200
    assert apns_peer.pings >= 1 and client.connections_opened == 1


async def test_a_half_open_connection_is_dropped_after_one_unanswered_ping(
    apns_peer: ApnsPeer, apns_key: ApnsKey, client: H2Client
) -> None:
    """The peer keeps the TCP connection but never sends another byte: the next request,
    after a quiet spell, costs a PING timeout and a reconnect, not its whole timeout."""
    apns_peer.silent_after = 1
    apns_peer.misbehave_connections = 1
    headers = apns_headers(apns_key)
    await client.request("POST", f"/3/device/{hex_token(1)}", headers, PAYLOAD)
    await asyncio.sleep(0.4)
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        response = await client.request(
            "POST", f"/3/device/{hex_token(2)}", headers, PAYLOAD, timeout=10
        )
    assert response.status == 200
    assert time.monotonic() - started < 2.0
    assert client.connections_opened == 2
    assert any(entry["event"] == "h2_ping_unanswered" for entry in logs)


async def test_requests_in_flight_on_a_connection_gone_silent_fail_fast(
    apns_peer: ApnsPeer, apns_key: ApnsKey, client: H2Client
) -> None:
    """No quiet spell before the request: the timer PINGs while answers are due."""
    apns_peer.silent_after = 1
    apns_peer.misbehave_connections = 1
    headers = apns_headers(apns_key)
    await client.request("POST", f"/3/device/{hex_token(1)}", headers, PAYLOAD)
    started = time.monotonic()
    with pytest.raises(H2ConnectionLost) as caught:
        await client.request("POST", f"/3/device/{hex_token(2)}", headers, PAYLOAD, timeout=10)
    assert caught.value.processed  # sent: the peer may have acted on it
    assert time.monotonic() - started < 2.0
    response = await client.request("POST", f"/3/device/{hex_token(3)}", headers, PAYLOAD)
    assert response.status == 200 and client.connections_opened == 2


@pytest.mark.parametrize("abrupt", [False, True])
async def test_goaway_reason_is_logged_and_the_connection_takes_no_new_streams(
    apns_peer: ApnsPeer, apns_key: ApnsKey, client: H2Client, abrupt: bool
) -> None:
    if abrupt:
        apns_peer.goaway_abrupt_after = 1
    else:
        apns_peer.goaway_after = 1
    apns_peer.misbehave_connections = 1
    apns_peer.goaway_debug = b"shutting down\x00\x1b[31m" + b"x" * 500
    headers = apns_headers(apns_key)
    with structlog.testing.capture_logs() as logs:
        for i in range(3):
            response = await client.request("POST", f"/3/device/{hex_token(i)}", headers, PAYLOAD)
            assert response.status == 200
    goaways = [entry for entry in logs if entry["event"] == "h2_goaway"]
    assert len(goaways) == 1
    entry = goaways[0]
    assert entry["error_code"] == ("INTERNAL_ERROR" if abrupt else "NO_ERROR")
    assert entry["debug"].startswith("shutting down??[31m")
    assert len(entry["debug"]) <= 123 and entry["debug"].isprintable()
    assert client.connections_opened == 2 and apns_peer.goaways == 1


async def test_a_peer_that_stops_reading_does_not_make_the_client_buffer_without_bound(
    apns_peer: ApnsPeer, apns_key: ApnsKey
) -> None:
    """Windows wide open (16 MB per stream, 64 MB per connection), then the peer stops reading
    its socket: 32 MB of bodies must wait for the socket, not pile up in our write buffer."""
    apns_peer.initial_window_size = 1 << 24
    apns_peer.connection_window = 1 << 26
    apns_peer.stop_reading_after = 1
    assert apns_peer.ca_file is not None
    context = ssl.create_default_context(cafile=str(apns_peer.ca_file))
    client = H2Client(apns_peer.url, ssl_context=context, ping_interval=None)
    headers = apns_headers(apns_key)
    body = b"x" * (4 << 20)
    try:
        await client.request("POST", f"/3/device/{hex_token(0)}", headers, PAYLOAD)
        (connection,) = client._connections
        assert connection.transport is not None
        transport = connection.transport
        largest = 0

        async def watch() -> None:
            nonlocal largest
            while True:
                largest = max(largest, transport.get_write_buffer_size())
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        results = await asyncio.gather(
            *(
                client.request("POST", f"/3/device/{hex_token(i)}", headers, body, timeout=1.5)
                for i in range(1, 9)
            ),
            return_exceptions=True,
        )
        # Sent after the socket filled up: nothing was; they waited in the queue.
        with pytest.raises(H2QueueTimeout):
            await client.request("POST", f"/3/device/{hex_token(9)}", headers, PAYLOAD, timeout=0.3)
        watcher.cancel()
        # Those whose headers went out may have been processed; the rest waited for room.
        assert all(isinstance(r, (H2Timeout, H2QueueTimeout)) for r in results), results
        assert any(isinstance(r, H2QueueTimeout) for r in results), results
        assert largest < 1 << 20, largest  # 32 MB offered, never more than the high-water mark
    finally:
        await client.aclose()


async def test_plain_http_with_prior_knowledge_towards_loopback(
    apns_key: ApnsKey, tmp_path: Path
) -> None:
    async with make_peer(apns_key).running(tmp_path, tls=False) as peer:
        assert peer.url.startswith("http://127.0.0.1:")
        client = H2Client(peer.url)
        try:
            response = await client.request(
                "POST", f"/3/device/{hex_token(1)}", apns_headers(apns_key), PAYLOAD
            )
            assert response.status == 200 and peer.delivered(hex_token(1)) == 1
        finally:
            await client.aclose()
    with pytest.raises(ValueError, match="loopback"):
        H2Client("http://api.push.apple.com")


def test_a_missing_h2_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    h2client.check_borrowed_internals()
    monkeypatch.delattr(H2Connection, "_receive_goaway_frame")
    with pytest.raises(BorrowedInternalMissing, match="_receive_goaway_frame"):
        h2client.check_borrowed_internals()


def test_a_changed_hpack_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpack import Encoder

    monkeypatch.delattr(Encoder, "_encode_table_size_change")
    with pytest.raises(BorrowedInternalMissing, match="_encode_table_size_change"):
        h2client.check_borrowed_internals()
