"""Webhook task: Standard Webhooks signatures (verified by an independent implementation here),
retries with a stable webhook-id, no redirects, and SSRF refusals after DNS resolution."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import trustme

from stateless.bots.outbound import post_checked
from stateless.bots.tasks.base import TaskFailed
from stateless.config import Settings
from stateless.kit.push.targets import address_allowed
from tests.bots.conftest import configure, execute, tenant_webhook_secret
from tests.conftest import ClientFactory, TenantFactory
from tests.peers.webhook import Answer, Received, running_webhook_receiver
from tests.privacy import assert_not_stored
from tests.test_core import assert_problem


def verify_standard_webhook(secret: str, delivery: Received, tolerance_seconds: int = 300) -> None:
    """What a receiver does (standardwebhooks.com), written from the spec, not from our code."""
    message_id = delivery.headers["webhook-id"]
    timestamp = delivery.headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) <= tolerance_seconds
    encoded = secret.removeprefix("whsec_")
    # The spec's secret is standard base64; also accept the URL-safe alphabet the CLI emits.
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_")
    signed = f"{message_id}.{timestamp}.".encode() + delivery.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1) for part in delivery.headers["webhook-signature"].split(" ")]
    assert any(
        version == "v1" and hmac.compare_digest(signature, expected)
        for version, signature in offered
    ), "signature does not verify"


async def test_delivery_is_signed_per_standard_webhooks(
    capsys: pytest.CaptureFixture[str],
    make_client: ClientFactory,
    make_tenant: TenantFactory,
    settings: Settings,
) -> None:
    with running_webhook_receiver() as receiver:
        client = await make_client(webhook_allow_private_networks=True)
        tenant = await make_tenant("hooks", webhook_url=receiver.url)
        secret = await tenant_webhook_secret(settings, "hooks")
        data = {"order": 4711, "email": "buyer@example.com"}
        r = await execute(client, tenant, "webhook", {"event_type": "order.paid", "data": data})
        assert r.status_code == 200, r.text
        [delivery] = receiver.received
        verify_standard_webhook(secret, delivery)
        assert delivery.path == "/hooks/stateless"
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.headers["host"] == f"127.0.0.1:{receiver.port}"
        payload = json.loads(delivery.body)
        assert payload["type"] == "order.paid" and payload["data"] == data
        assert payload["timestamp"].endswith("Z")
        result = r.json()["result"]
        assert result == {
            "webhook_id": delivery.headers["webhook-id"],
            "status_code": 200,
            "attempts": 1,
        }
        # tampering breaks the signature
        forged = Received(delivery.method, delivery.path, delivery.headers, delivery.body + b" ")
        with pytest.raises(AssertionError):
            verify_standard_webhook(secret, forged)
    logs = capsys.readouterr().out
    assert "/api/v1/bots/execute" in logs
    await assert_not_stored(
        settings, [secret, secret.removeprefix("whsec_"), "buyer@example.com"], logs=logs
    )


async def test_5xx_is_retried_with_the_same_webhook_id(
    make_client: ClientFactory, make_tenant: TenantFactory, settings: Settings
) -> None:
    with running_webhook_receiver(Answer(500), Answer(503)) as receiver:
        client = await make_client(webhook_allow_private_networks=True)
        tenant = await make_tenant("hooks", webhook_url=receiver.url)
        secret = await tenant_webhook_secret(settings, "hooks")
        r = await execute(client, tenant, "webhook", {"data": {"n": 1}})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["attempts"] == 3
        ids = {d.headers["webhook-id"] for d in receiver.received}
        assert len(receiver.received) == 3 and len(ids) == 1
        for delivery in receiver.received:
            verify_standard_webhook(secret, delivery)


async def test_4xx_and_redirects_fail_without_retry_or_following(
    make_client: ClientFactory, make_tenant: TenantFactory, settings: Settings
) -> None:
    with (
        running_webhook_receiver() as elsewhere,
        running_webhook_receiver(
            Answer(410), Answer(302, headers={"Location": elsewhere.url})
        ) as receiver,
    ):
        client = await make_client(webhook_allow_private_networks=True)
        tenant = await make_tenant("hooks", webhook_url=receiver.url)
        gone = await execute(client, tenant, "webhook", {"data": {}})
        body = assert_problem(gone, 502, "provider_error")
        assert "410" in body["detail"] and "127.0.0.1" not in body["detail"]
        moved = await execute(client, tenant, "webhook", {"data": {}})
        body = assert_problem(moved, 502, "provider_error")
        assert "redirect" in body["detail"]
        assert len(receiver.received) == 2
        assert elsewhere.received == []


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.20",
        "169.254.169.254",
        "localhost",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
    ],
)
async def test_private_targets_are_refused_when_the_flag_is_off(
    make_client: ClientFactory, make_tenant: TenantFactory, settings: Settings, host: str
) -> None:
    with running_webhook_receiver() as receiver:
        client = await make_client(webhook_allow_private_networks=False, bot_timeout_seconds=5)
        port = receiver.port if host in ("127.0.0.1", "localhost") else 80
        tenant = await make_tenant("hooks", webhook_url=f"http://{host}:{port}/latest/meta-data")
        r = await execute(client, tenant, "webhook", {"data": {}})
        body = assert_problem(r, 422, "target_refused")
        assert "WEBHOOK_ALLOW_PRIVATE_NETWORKS" in body["detail"]
        assert receiver.received == []
        task = await client.get(
            "/api/v1/bots/tasks/" + (await _last_task_id(settings)), headers=tenant.sk
        )
        assert task.json()["status"] == "failed"
        assert task.json()["error"]["code"] == "target_refused"


async def _last_task_id(settings: Settings) -> str:
    from tests.support import sql

    rows = await sql(settings, "SELECT task_id FROM bot_tasks ORDER BY created_at DESC")
    return str(rows[0][0])


def test_only_global_unicast_addresses_are_allowed() -> None:
    allowed = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "1.1.1.1"]
    refused = [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::",
    ]
    for text in allowed:
        assert address_allowed(ipaddress.ip_address(text)), text
    for text in refused:
        assert not address_allowed(ipaddress.ip_address(text)), text


async def test_webhook_needs_a_registered_url(
    make_client: ClientFactory, make_tenant: TenantFactory, settings: Settings
) -> None:
    client = await make_client()
    tenant = await make_tenant("plain")
    r = await execute(client, tenant, "webhook", {"data": {}})
    assert_problem(r, 422, "webhook_not_configured")
    await configure(settings, client, "plain", webhook_url="https://hooks.example/x")
    r = await execute(client, tenant, "webhook", {"data": {}, "extra": 1})
    assert_problem(r, 422, "validation_error")


async def test_large_answers_are_read_bounded(
    make_client: ClientFactory, make_tenant: TenantFactory
) -> None:
    with running_webhook_receiver(Answer(200, b"x" * (4 * 1024 * 1024))) as receiver:
        client = await make_client(webhook_allow_private_networks=True)
        tenant = await make_tenant("hooks", webhook_url=receiver.url)
        r = await execute(client, tenant, "webhook", {"data": {}})
        assert r.status_code == 200, r.text


@pytest.fixture
def https_receiver() -> Iterator[tuple[int, trustme.CA, list[str]]]:
    """An HTTPS server on 127.0.0.1 whose certificate names only `localhost`."""
    ca = trustme.CA()
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hosts.append(self.headers.get("Host", ""))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1]), ca, hosts
    server.shutdown()
    server.server_close()


async def test_https_targets_are_pinned_to_the_checked_address_and_verified_by_name(
    https_receiver: tuple[int, trustme.CA, list[str]],
) -> None:
    port, ca, hosts = https_receiver
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    async with httpx.AsyncClient() as shared:
        ok = await post_checked(
            shared,
            f"https://localhost:{port}/hook",
            content=b"{}",
            headers={},
            allow_private=True,
            timeout_seconds=5,
            verify=trust,
        )
        assert ok.status_code == 204
        assert hosts == [f"localhost:{port}"]
        # the certificate must match the URL's name, even though we dial the address
        with pytest.raises(TaskFailed, match="could not be reached"):
            await post_checked(
                shared,
                f"https://127.0.0.1:{port}/hook",
                content=b"{}",
                headers={},
                allow_private=True,
                timeout_seconds=5,
                verify=trust,
            )
        # and the system store does not trust a private CA
        with pytest.raises(TaskFailed):
            await post_checked(
                shared,
                f"https://localhost:{port}/hook",
                content=b"{}",
                headers={},
                allow_private=True,
                timeout_seconds=5,
            )
        assert len(hosts) == 1
