"""kit/push/h2client.py on its own against the APNs peer: failures a caller must be able to tell apart."""

from __future__ import annotations

import asyncio
import ssl
import time

import jwt
import orjson
import pytest
import trustme

from stateless.kit.push.h2client import H2Client, H2ConnectError, H2Timeout
from tests.ios.conftest import BUNDLE_ID, KEY_ID, TEAM_ID, ApnsKey, hex_token
from tests.peers.apns import ApnsPeer, free_port


def apns_headers(key: ApnsKey) -> list[tuple[str, str]]:
    bearer = jwt.encode(
        {"iss": TEAM_ID, "iat": int(time.time())},
        key.private_pem,
        algorithm="ES256",
        headers={"kid": KEY_ID},
    )
    return [("authorization", f"bearer {bearer}"), ("apns-topic", BUNDLE_ID)]


async def test_a_refused_connect_fails_every_queued_request_at_once_unprocessed() -> None:
    client = H2Client(f"https://127.0.0.1:{free_port()}", connect_timeout=2)
    started = time.monotonic()
    results = await asyncio.gather(
        *(client.request("POST", "/3/device/x", body=b"{}") for _ in range(20)),
        return_exceptions=True,
    )
    assert all(isinstance(r, H2ConnectError) and not r.processed for r in results)
    assert time.monotonic() - started < 2
    await client.aclose()


async def test_a_timed_out_stream_is_cancelled_and_frees_its_slot(
    apns_peer: ApnsPeer, apns_key: ApnsKey
) -> None:
    apns_peer.max_concurrent_streams = 1
    slow, fast = hex_token(1), hex_token(2)
    apns_peer.delays[slow] = [5.0]
    assert apns_peer.ca_file is not None
    client = H2Client(
        apns_peer.url, ssl_context=ssl.create_default_context(cafile=str(apns_peer.ca_file))
    )
    headers = apns_headers(apns_key)
    try:
        with pytest.raises(H2Timeout) as caught:
            await client.request("POST", f"/3/device/{slow}", headers, b"{}", timeout=0.3)
        assert caught.value.processed  # the peer may have acted on it: callers must know
        # The only stream slot is free again, on the same connection.
        response = await client.request("POST", f"/3/device/{fast}", headers, b"{}", timeout=5)
        assert response.status == 200 and response.header("apns-id") is not None
        assert client.connections_opened == 1
        assert apns_peer.attempts(slow) == 0 and apns_peer.delivered(fast) == 1
    finally:
        await client.aclose()


async def test_a_large_body_is_sent_within_frame_size_and_both_windows(
    apns_peer: ApnsPeer, apns_key: ApnsKey
) -> None:
    # 200 KB: more than the connection window (64 KB) and 13 frames of the peer's 16 KB
    # MAX_FRAME_SIZE; the peer's h2 breaks the connection on any overrun.
    apns_peer.initial_window_size = 32768
    assert apns_peer.ca_file is not None
    client = H2Client(
        apns_peer.url, ssl_context=ssl.create_default_context(cafile=str(apns_peer.ca_file))
    )
    body = b'{"aps": {}, "pad": "' + b"x" * 200_000 + b'"}'
    try:
        responses = await asyncio.gather(
            *(
                client.request("POST", f"/3/device/{hex_token(i)}", apns_headers(apns_key), body)
                for i in range(3)
            )
        )
        assert [r.status for r in responses] == [413] * 3
        assert [orjson.loads(r.body) for r in responses] == [{"reason": "PayloadTooLarge"}] * 3
        assert apns_peer.protocol_errors == [] and apns_peer.count == 3
    finally:
        await client.aclose()


async def test_an_origin_without_h2_is_a_connect_error() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server_context.set_alpn_protocols(["http/1.1"])  # an HTTP/1.1-only server
    server = await asyncio.get_running_loop().create_server(
        asyncio.Protocol, "127.0.0.1", 0, ssl=server_context
    )
    port = server.sockets[0].getsockname()[1]
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client = H2Client(f"https://127.0.0.1:{port}", ssl_context=client_context)
    try:
        with pytest.raises(H2ConnectError, match="does not offer HTTP/2") as caught:
            await client.request("GET", "/", timeout=5)
        assert not caught.value.processed
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("table_size", [0, 300, 4096])
async def test_headers_stay_exact_whatever_hpack_table_the_peer_allows(
    apns_peer: ApnsPeer, apns_key: ApnsKey, table_size: int
) -> None:
    """The encoder reuses its last constant header block while the table is unchanged: with a
    table too small for the token (every request evicts), or none at all, or room for all, and
    the token and topic changing midway, the peer must read every header as sent."""
    apns_peer.header_table_size = table_size
    apns_peer.keys["OTHERKEY01"] = apns_peer.keys[KEY_ID]
    assert apns_peer.ca_file is not None
    client = H2Client(
        apns_peer.url, ssl_context=ssl.create_default_context(cafile=str(apns_peer.ca_file))
    )
    first = apns_headers(apns_key)
    second = [
        (
            "authorization",
            "bearer "
            + jwt.encode(
                {"iss": TEAM_ID, "iat": int(time.time())},
                apns_key.private_pem,
                algorithm="ES256",
                headers={"kid": "OTHERKEY01"},
            ),
        ),
        ("apns-topic", BUNDLE_ID),
    ]
    try:
        for i in range(60):
            headers = first if i < 20 or i >= 40 else second
            extra = [("apns-collapse-id", f"c{i % 3}")] if i % 7 == 0 else []
            response = await client.request(
                "POST", f"/3/device/{hex_token(i)}", [*headers, *extra], b'{"aps":{}}'
            )
            assert response.status == 200, response.body
        seen = apns_peer.received
        assert [r.token for r in seen] == [hex_token(i) for i in range(60)]
        assert {r.jwt for r in seen[20:40]} == {second[0][1].removeprefix("bearer ")}
        assert {r.jwt for r in seen[:20] + seen[40:]} == {first[0][1].removeprefix("bearer ")}
        assert [r.collapse_id for r in seen] == [
            f"c{i % 3}" if i % 7 == 0 else None for i in range(60)
        ]
    finally:
        await client.aclose()
