"""A local peer speaking Apple's legacy verifyReceipt protocol (production and sandbox hosts).

POST JSON `{"receipt-data", "password"?, "exclude-old-transactions"?}` -> JSON with `status`
and, on 0, `environment`, `receipt`, `latest_receipt_info`, `pending_renewal_info`.
Tests script what each receipt answers on each host and read back what was sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PRODUCTION_PATH = "/verifyReceipt"
SANDBOX_PATH = "/sandbox/verifyReceipt"


@dataclass
class Scripted:
    """What one receipt answers: a JSON body per host, or raw bytes (to test garbage)."""

    production: dict[str, Any] | bytes
    sandbox: dict[str, Any] | bytes = field(default_factory=lambda: {"status": 21008})


@dataclass
class VerifyReceiptPeer:
    shared_secret: str
    receipts: dict[str, Scripted] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    port: int = 0

    @property
    def production_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PRODUCTION_PATH}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SANDBOX_PATH}"

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any] | bytes:
        receipt = body.get("receipt-data")
        if not isinstance(receipt, str):
            return {"status": 21000}
        scripted = self.receipts.get(receipt)
        if scripted is None:
            return {"status": 21002}  # what Apple says about data that is not a receipt
        answer = scripted.production if path == PRODUCTION_PATH else scripted.sandbox
        if (
            isinstance(answer, dict)
            and answer.get("status") == 0
            and body.get("password") != self.shared_secret
        ):
            return {"status": 21004}
        return answer


def _handler(peer: VerifyReceiptPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path not in (PRODUCTION_PATH, SANDBOX_PATH):
                self.send_response(404)
                self.end_headers()
                return
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            peer.requests.append((self.path, body))
            answer = peer.answer(self.path, body)
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def running_peer(shared_secret: str) -> Iterator[VerifyReceiptPeer]:
    """Serve the peer on 127.0.0.1 on a free port in a background thread."""
    peer = VerifyReceiptPeer(shared_secret=shared_secret)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(peer))
    peer.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def subscription_receipt(
    bundle_id: str,
    entries: list[dict[str, Any]],
    *,
    environment: str = "Production",
    pending_renewal_info: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A status-0 answer for an app receipt with subscription transactions."""
    return {
        "status": 0,
        "environment": environment,
        "receipt": {
            "receipt_type": "ProductionSandbox" if environment == "Sandbox" else "Production",
            "bundle_id": bundle_id,
            "application_version": "1",
            "in_app": entries,
        },
        "latest_receipt_info": entries,
        "pending_renewal_info": pending_renewal_info or [],
        "latest_receipt": "bGF0ZXN0",
    }


def receipt_entry(
    transaction_id: str,
    original_transaction_id: str,
    *,
    product_id: str = "com.example.pro.monthly",
    purchase_ms: int,
    expires_ms: int | None,
    cancelled_ms: int | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "quantity": "1",
        "product_id": product_id,
        "transaction_id": transaction_id,
        "original_transaction_id": original_transaction_id,
        "purchase_date_ms": str(purchase_ms),
        "original_purchase_date_ms": str(purchase_ms),
        "is_trial_period": "false",
    }
    if expires_ms is not None:
        entry["expires_date_ms"] = str(expires_ms)
    if cancelled_ms is not None:
        entry["cancellation_date_ms"] = str(cancelled_ms)
        entry["cancellation_reason"] = "0"
    return entry
