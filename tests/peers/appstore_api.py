"""A local peer speaking the App Store Server API (the part the entitlements feature calls).

Every request must carry `Authorization: Bearer <jwt>`, checked as Apple does: ES256 header with
`kid` == the key id, signed by the .p8 key whose public half the peer holds, `aud`
"appstoreconnect-v1", `iss` == issuer id, `bid` == bundle id, `exp` present, not past and at most
an hour ahead. Anything else: 401 with an empty body (Apple's answer).

- `GET /inApps/v1/subscriptions/{transactionId}` (Get All Subscription Statuses): StatusResponse
  built from what the test scripted with `set_subscription()`; an unknown id is 404 / 4040010.
- `POST /inApps/v1/notifications/history[?paginationToken=]` (Get Notification History): the
  signed payloads added with `add_history()` whose signed date lies in [startDate, endDate],
  oldest first, `history_page_size` a page.

`fail_next()` makes the next authenticated requests answer an error (429 with Retry-After...).
Error bodies are Apple's `{"errorCode", "errorMessage"}` with Content-Type exactly
`application/json` (the official library parses an error body only under that exact value).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.peers.apple_ca import TestAppleCA, notification, now_ms, renewal_info, transaction
from tests.peers.webhook import Answer, Received, serve_http

AUDIENCE = "appstoreconnect-v1"
SUBSCRIPTION_GROUP = "21000000"
STATUS_PREFIX = "/inApps/v1/subscriptions/"
HISTORY_PATH = "/inApps/v1/notifications/history"
# Apple answers a notification history request whose startDate is older than this with 4000012.
HISTORY_MAX_AGE = timedelta(days=180)

# Subscription statuses (Apple's `status` in lastTransactions).
ACTIVE, EXPIRED, BILLING_RETRY, GRACE_PERIOD, REVOKED = 1, 2, 3, 4, 5

# Apple's error codes and messages for the answers this peer gives.
ERRORS: dict[int, tuple[int, str]] = {
    400: (4000000, "Bad request."),
    403: (4030000, "Forbidden."),
    404: (4040000, "Not found."),
    429: (4290000, "Rate limit exceeded."),
    500: (5000000, "An unknown error occurred."),
    503: (5000001, "An unknown error occurred. Please try again."),
}


def make_api_key() -> tuple[bytes, bytes]:
    """A P-256 key as App Store Connect hands it out: (the .p8 PKCS#8 PEM, its public key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


@dataclass
class ApiRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]  # parse_qs: `status` may repeat
    json: Any | None
    claims: dict[str, Any] | None  # the verified bearer token's claims; None when refused
    status: int = 0  # what the peer answered


@dataclass
class ScriptedSubscription:
    original_transaction_id: str
    status: int
    signed_transaction: str
    signed_renewal: str
    group: str = SUBSCRIPTION_GROUP


@dataclass
class HistoryItem:
    signed_payload: str
    signed_date_ms: int
    send_attempts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Fault:
    status: int
    count: int
    retry_after: int | None


def _apple_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> Answer:
    body = json.dumps({"errorCode": code, "errorMessage": message}).encode()
    return Answer(status, body, {"Content-Type": "application/json", **(headers or {})})


def _unverified(jws: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(jws, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims


@dataclass
class AppStoreApiPeer:
    ca: TestAppleCA
    bundle_id: str
    issuer_id: str
    key_id: str
    public_key_pem: bytes
    environment: str = "Sandbox"
    app_apple_id: int | None = None
    history_page_size: int = 20
    requests: list[ApiRequest] = field(default_factory=list)
    subscriptions: dict[str, ScriptedSubscription] = field(default_factory=dict)
    history: list[HistoryItem] = field(default_factory=list)
    port: int = 0
    _aliases: dict[str, str] = field(default_factory=dict)
    _faults: list[_Fault] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ----------------------------------------------------------------------------

    def set_subscription(
        self,
        original_transaction_id: str,
        *,
        status: int,
        signed_transaction: str,
        signed_renewal: str,
        also_known_as: list[str] | None = None,
    ) -> None:
        """What Get All Subscription Statuses answers for this subscription (replaces any earlier
        script); found by the original transaction id and by every id in `also_known_as`."""
        with self._lock:
            self.subscriptions[original_transaction_id] = ScriptedSubscription(
                original_transaction_id, status, signed_transaction, signed_renewal
            )
            for alias in also_known_as or []:
                self._aliases[alias] = original_transaction_id

    def script_subscription(
        self,
        original_transaction_id: str,
        *,
        status: int = ACTIVE,
        transaction_id: str | None = None,
        product_id: str = "com.example.pro.monthly",
        expires_in: timedelta | None = timedelta(days=30),
        revoked: bool = False,
        grace_for: timedelta | None = None,
        also_known_as: list[str] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """`set_subscription()` with a transaction and renewal info signed by the peer's CA.

        Returns the (transaction, renewal info) payloads that were signed."""
        tx = transaction(
            self.bundle_id,
            transaction_id=transaction_id or original_transaction_id,
            original_transaction_id=original_transaction_id,
            product_id=product_id,
            expires_in=expires_in,
            environment=self.environment,
            revoked=revoked,
        )
        renewal = renewal_info(
            original_transaction_id,
            grace_for=grace_for,
            environment=self.environment,
            product_id=product_id,
        )
        aliases = list(also_known_as or [])
        if tx["transactionId"] != original_transaction_id:
            aliases.append(tx["transactionId"])
        self.set_subscription(
            original_transaction_id,
            status=status,
            signed_transaction=self.ca.sign(tx),
            signed_renewal=self.ca.sign(renewal),
            also_known_as=aliases,
        )
        return tx, renewal

    def add_history(
        self,
        signed_payload: str,
        signed_date_ms: int,
        *,
        send_attempts: list[dict[str, Any]] | None = None,
    ) -> None:
        """A notification Apple sent (or tried to): `send_attempts` are Apple's
        `{"attemptDate": ms, "sendAttemptResult": "SUCCESS" | ...}` (default: none listed)."""
        with self._lock:
            self.history.append(HistoryItem(signed_payload, signed_date_ms, send_attempts or []))
            self.history.sort(key=lambda item: item.signed_date_ms)

    def add_notification(
        self,
        notification_type: str,
        *,
        subtype: str | None = None,
        signed_transaction: str | None = None,
        signed_renewal: str | None = None,
        signed_date_ms: int | None = None,
    ) -> str:
        """Sign a V2 notification with the peer's CA, add it to the history, return the JWS."""
        payload = notification(
            self.bundle_id,
            notification_type,
            signed_transaction=signed_transaction,
            signed_renewal=signed_renewal,
            subtype=subtype,
            environment=self.environment,
            app_apple_id=self.app_apple_id,
        )
        if signed_date_ms is not None:
            payload["signedDate"] = signed_date_ms
        signed = self.ca.sign(payload)
        self.add_history(signed, payload["signedDate"])
        return signed

    def fail_next(self, status: int, count: int = 1, retry_after: int | None = None) -> None:
        """The next `count` authenticated requests answer `status` (Apple's error JSON)."""
        with self._lock:
            self._faults.append(_Fault(status, count, retry_after))

    # -- protocol -----------------------------------------------------------------------------

    def verify_token(self, authorization: str | None) -> dict[str, Any] | None:
        """The claims of a bearer token Apple would accept, else None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        token = authorization.removeprefix("Bearer ").strip()
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                return None
            claims: dict[str, Any] = jwt.decode(
                token,
                self.public_key_pem,
                algorithms=["ES256"],
                audience=AUDIENCE,
                issuer=self.issuer_id,
                options={"require": ["exp", "aud", "iss", "bid"]},
            )
        except jwt.PyJWTError:
            return None
        if claims.get("bid") != self.bundle_id:
            return None
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp > time.time() + 3600:
            return None
        return claims

    def respond(self, request: Received) -> Answer:
        parts = urlsplit(request.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        body: Any | None = None
        if request.body:
            try:
                body = json.loads(request.body)
            except ValueError:
                body = None
        claims = self.verify_token(request.headers.get("authorization"))
        record = ApiRequest(request.method, parts.path, query, body, claims)
        with self._lock:
            if claims is None:
                answer = Answer(401)
            elif self._faults:
                fault = self._faults[0]
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.pop(0)
                answer = self._fault_answer(fault)
            else:
                answer = self._route(request.method, parts.path, query, request.body, body)
            record.status = answer.status
            self.requests.append(record)
        return answer

    def _fault_answer(self, fault: _Fault) -> Answer:
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        if fault.status == 401:
            return Answer(401, b"", headers)
        code, message = ERRORS.get(fault.status, (fault.status * 10000, "An error occurred."))
        return _apple_error(fault.status, code, message, headers)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], raw: bytes, body: Any
    ) -> Answer:
        if method == "GET" and path.startswith(STATUS_PREFIX):
            transaction_id = path.removeprefix(STATUS_PREFIX)
            if transaction_id and "/" not in transaction_id:
                return self._statuses(transaction_id, query.get("status", []))
        if method == "POST" and path == HISTORY_PATH:
            token = query.get("paginationToken", [None])[0]
            return self._history(body if raw else None, token)
        return _apple_error(404, 4040000, "Not found.")

    def _statuses(self, transaction_id: str, status_filter: list[str]) -> Answer:
        if not transaction_id.isdigit():
            return _apple_error(400, 4000006, "Invalid transaction id.")
        original = self._aliases.get(transaction_id, transaction_id)
        scripted = self.subscriptions.get(original)
        if scripted is None:
            return _apple_error(404, 4040010, "Transaction id not found.")
        wanted: set[int] = set()
        for value in status_filter:
            if not value.isdigit() or int(value) not in range(1, 6):
                return _apple_error(400, 4000031, "Invalid status.")
            wanted.add(int(value))
        data: list[dict[str, Any]] = []
        if not wanted or scripted.status in wanted:
            data.append(
                {
                    "subscriptionGroupIdentifier": scripted.group,
                    "lastTransactions": [
                        {
                            "originalTransactionId": scripted.original_transaction_id,
                            "status": scripted.status,
                            "signedTransactionInfo": scripted.signed_transaction,
                            "signedRenewalInfo": scripted.signed_renewal,
                        }
                    ],
                }
            )
        answer = {
            "environment": self.environment,
            "bundleId": self.bundle_id,
            "appAppleId": self.app_apple_id,
            "data": data,
        }
        return Answer(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def _history(self, body: Any, token: str | None) -> Answer:
        if not isinstance(body, dict):
            return _apple_error(400, 4000000, "Bad request.")
        start, end = body.get("startDate"), body.get("endDate")
        if not isinstance(start, int) or isinstance(start, bool) or start <= 0:
            return _apple_error(400, 4000015, "Invalid start date.")
        if not isinstance(end, int) or isinstance(end, bool) or end <= 0:
            return _apple_error(400, 4000016, "Invalid end date.")
        if start < now_ms(-HISTORY_MAX_AGE):
            return _apple_error(400, 4000012, "Start date is too far in the past.")
        if end <= start:
            return _apple_error(400, 4000013, "Start date after end date.")
        if body.get("transactionId") is not None and (
            body.get("notificationType") is not None or body.get("notificationSubtype") is not None
        ):
            return _apple_error(400, 4000019, "Multiple filters supplied.")
        offset = 0
        if token is not None:
            decoded = _decode_token(token)
            if decoded is None or decoded[1:] != (start, end):
                return _apple_error(400, 4000014, "Invalid pagination token.")
            offset = decoded[0]
        matching = [item for item in self.history if self._matches(item, body, start, end)]
        page = matching[offset : offset + self.history_page_size]
        next_offset = offset + len(page)
        answer = {
            "notificationHistory": [
                {"signedPayload": item.signed_payload, "sendAttempts": item.send_attempts}
                for item in page
            ],
            "hasMore": next_offset < len(matching),
            "paginationToken": _encode_token(next_offset, start, end),
        }
        return Answer(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def _matches(self, item: HistoryItem, body: dict[str, Any], start: int, end: int) -> bool:
        if not start <= item.signed_date_ms <= end:
            return False
        payload = _unverified(item.signed_payload)
        kind, subtype = body.get("notificationType"), body.get("notificationSubtype")
        if kind is not None and payload.get("notificationType") != kind:
            return False
        if subtype is not None and payload.get("subtype") != subtype:
            return False
        wanted_tx = body.get("transactionId")
        if wanted_tx is not None:
            signed_tx = (payload.get("data") or {}).get("signedTransactionInfo")
            tx = _unverified(signed_tx) if isinstance(signed_tx, str) else {}
            wanted = self._aliases.get(wanted_tx, wanted_tx)
            if wanted not in (tx.get("transactionId"), tx.get("originalTransactionId")):
                return False
        delivered = any(a.get("sendAttemptResult") == "SUCCESS" for a in item.send_attempts)
        return not (body.get("onlyFailures") and delivered)


def _encode_token(offset: int, start: int, end: int) -> str:
    raw = json.dumps([offset, start, end]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[int, int, int] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        offset, start, end = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not all(isinstance(v, int) for v in (offset, start, end)) or offset < 0:
        return None
    return offset, start, end


@contextmanager
def running_appstore_api(
    ca: TestAppleCA,
    *,
    bundle_id: str,
    issuer_id: str,
    key_id: str,
    public_key_pem: bytes,
    environment: str = "Sandbox",
    app_apple_id: int | None = None,
    history_page_size: int = 20,
) -> Iterator[AppStoreApiPeer]:
    """Serve the App Store Server API peer on 127.0.0.1 (a free port) until the block ends."""
    peer = AppStoreApiPeer(
        ca=ca,
        bundle_id=bundle_id,
        issuer_id=issuer_id,
        key_id=key_id,
        public_key_pem=public_key_pem,
        environment=environment,
        app_apple_id=app_apple_id,
        history_page_size=history_page_size,
    )
    with serve_http(peer.respond) as port:
        peer.port = port
        yield peer
