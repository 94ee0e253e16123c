"""Legacy app receipts: Apple's (deprecated) verifyReceipt endpoint, production first.

Apple's documented order: send to production; on status 21007 (a sandbox receipt) send the same
request to the sandbox URL. The receipt and the shared secret travel only in the request body and
are never stored or logged; failures are logged by kind only.
"""

from __future__ import annotations

from typing import Any

import httpx
import structlog

from stateless.kit.web.errors import BadGateway

log = structlog.get_logger("stateless.storekit.receipts")

SANDBOX_RECEIPT = 21007

# Apple's verifyReceipt status codes -> our stable reasons (all answer `invalid`, except 21006).
STATUS_REASONS: dict[int, str] = {
    21000: "malformed_request",
    21001: "malformed_request",
    21002: "malformed_receipt",
    21003: "receipt_not_authenticated",
    21004: "shared_secret_mismatch",
    21005: "apple_server_unavailable",
    21006: "subscription_expired",
    21007: "sandbox_receipt",
    21008: "production_receipt",
    21009: "apple_internal_error",
    21010: "account_not_found",
}


def reason_for_status(status: int) -> str:
    if 21100 <= status <= 21199:
        return "apple_internal_error"
    return STATUS_REASONS.get(status, "unknown_apple_status")


class ProviderError(BadGateway):
    code, title = "provider_error", "App Store receipt service failed"


class VerifyReceiptClient:
    def __init__(self, http: httpx.AsyncClient, production_url: str, sandbox_url: str) -> None:
        self.http = http
        self.production_url = production_url
        self.sandbox_url = sandbox_url

    async def _post(self, url: str, body: dict[str, Any], environment: str) -> dict[str, Any]:
        try:
            response = await self.http.post(url, json=body)
        except httpx.HTTPError as exc:
            log.warning(
                "verify_receipt_unreachable", environment=environment, error=type(exc).__name__
            )
            raise ProviderError("Apple's receipt service could not be reached") from None
        if response.status_code >= 400:
            log.warning(
                "verify_receipt_http_error", environment=environment, status=response.status_code
            )
            raise ProviderError(f"Apple's receipt service answered HTTP {response.status_code}")
        try:
            data = response.json()
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's reach
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("status"), int):
            log.warning("verify_receipt_bad_body", environment=environment)
            raise ProviderError("Apple's receipt service answered something that is not a receipt")
        return data

    async def verify(self, receipt_data: str, shared_secret: str | None) -> dict[str, Any]:
        """Apple's decoded answer (status 0 or an error status); raises 502 when unusable."""
        body: dict[str, Any] = {"receipt-data": receipt_data, "exclude-old-transactions": True}
        if shared_secret:
            body["password"] = shared_secret
        data = await self._post(self.production_url, body, "production")
        if data["status"] == SANDBOX_RECEIPT:
            data = await self._post(self.sandbox_url, body, "sandbox")
        return data
