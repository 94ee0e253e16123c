"""APNs over HTTP/2 with token auth: a small pool of connections per environment, many streams.

Provider tokens (ES256 JWTs) are cached per tenant and re-signed after 50 minutes (Apple
rejects them after 60 and refuses refreshes more often than every 20). 429 and 5xx answers,
timeouts (sent but unanswered: "Timeout"; never sent, no stream slot in time:
"ConnectionError:QueueTimeout"), refused streams and lost connections are retried by the
shared policy (kit/push/retry.py: exponential
backoff with jitter, a Retry-After honoured unless longer than `max_retry_after_seconds`, when
the answer is reported instead); everything else is returned to the caller as an outcome. The transport is `kit.push.h2client` (see docs/apns.md for why
not httpx or aioapns); in-flight requests are capped per process and per tenant.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jwt
import orjson
import structlog

from stateless.kit.push.h2client import H2Client, H2Error, H2QueueTimeout, H2Timeout
from stateless.kit.push.pushing import TenantGates
from stateless.kit.push.retry import RetryPolicy, retry_after_seconds

MAX_PAYLOAD_BYTES = 4096
TOKEN_REFRESH_AFTER_SECONDS = 50 * 60
TOKEN_MIN_REFRESH_INTERVAL_SECONDS = 20 * 60

# 400 reasons meaning "this token is dead" (as is any 410): the app registers again on launch.
DEAD_TOKEN_400_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})

# Four tries, 0.1 s then 0.2 s then 0.4 s apart (plus up to 0.1 s of jitter), 2 s at most.
APNS_RETRY = RetryPolicy(attempts=4, initial_seconds=0.1, maximum_seconds=2.0, jitter_seconds=0.1)
MAX_RETRY_AFTER_SECONDS = 10.0

ApnsEnvironment = Literal["production", "sandbox"]
Clock = Callable[[], float]

log = structlog.get_logger("stateless.ios.apns")


@dataclass(frozen=True, slots=True)
class ApnsCredentials:
    """A tenant's token-auth key from Apple's developer portal (.p8, ES256)."""

    team_id: str
    key_id: str
    key_pem: str

    @property
    def fingerprint(self) -> str:
        material = f"{self.team_id}\x00{self.key_id}\x00{self.key_pem}".encode()
        return hashlib.sha256(material).hexdigest()


@dataclass(frozen=True, slots=True)
class ApnsNotification:
    token: str
    environment: ApnsEnvironment
    topic: str
    push_type: Literal["alert", "background"]
    priority: int
    payload: bytes
    expiration: int | None = None
    collapse_id: str | None = None


@dataclass(frozen=True, slots=True)
class ApnsOutcome:
    """What APNs finally answered; status 0 means nothing reached APNs (see `reason`)."""

    status: int
    reason: str | None = None
    attempts: int = 0

    @property
    def delivered(self) -> bool:
        return self.status == 200

    @property
    def token_is_dead(self) -> bool:
        if self.status == 410:
            return True
        return self.status == 400 and self.reason in DEAD_TOKEN_400_REASONS


@dataclass(slots=True)
class _SignedToken:
    fingerprint: str
    jwt: str
    issued_at: float
    credentials: ApnsCredentials | None = None


class ApnsCredentialsError(ValueError):
    """The stored key cannot sign (not an ES256 private key)."""


class ProviderTokenCache:
    """Per-tenant provider JWTs: reused across requests, re-signed before Apple's 60 min limit."""

    def __init__(
        self,
        clock: Clock = time.time,
        refresh_after_seconds: float = TOKEN_REFRESH_AFTER_SECONDS,
        min_refresh_interval_seconds: float = TOKEN_MIN_REFRESH_INTERVAL_SECONDS,
    ) -> None:
        self.clock = clock
        self.refresh_after_seconds = refresh_after_seconds
        self.min_refresh_interval_seconds = min_refresh_interval_seconds
        self._tokens: dict[str, _SignedToken] = {}

    def bearer(self, app_id: str, credentials: ApnsCredentials) -> str:
        now = self.clock()
        cached = self._tokens.get(app_id)
        # The same credentials object (one push) skips hashing the key again.
        if (
            cached is not None
            and now - cached.issued_at < self.refresh_after_seconds
            and (cached.credentials is credentials or cached.fingerprint == credentials.fingerprint)
        ):
            cached.credentials = credentials
            return cached.jwt
        fingerprint = credentials.fingerprint
        signed = _SignedToken(fingerprint, self._sign(credentials, now), now, credentials)
        self._tokens[app_id] = signed
        return signed.jwt

    def expire(self, app_id: str, rejected_jwt: str) -> bool:
        """APNs said ExpiredProviderToken: sign anew next time, unless that would be too soon."""
        cached = self._tokens.get(app_id)
        if cached is None or cached.jwt != rejected_jwt:
            return cached is not None  # another request already re-signed it
        if self.clock() - cached.issued_at >= self.min_refresh_interval_seconds:
            del self._tokens[app_id]
            return True
        return False

    @staticmethod
    def _sign(credentials: ApnsCredentials, now: float) -> str:
        try:
            return jwt.encode(
                {"iss": credentials.team_id, "iat": int(now)},
                credentials.key_pem,
                algorithm="ES256",
                headers={"kid": credentials.key_id},
            )
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ApnsCredentialsError("the APNs key cannot sign ES256 tokens") from exc


def build_verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    """The TLS trust for APNs: the system store, or only the given CA bundle (tests, proxies).

    Loading either reads files: the lifespan calls this in a thread."""
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_file))


def _ssl_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    """The pools' TLS context (the h2 client sets its ALPN to h2); never an unverified one."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        raise ValueError("APNs needs a verified TLS connection")
    return ssl.create_default_context()


class ApnsClient:
    """Sends notifications; safe to share by every request and task of one process.

    `max_concurrency` caps the requests in flight in the process, `tenant_max_concurrency` those
    of one tenant (a second tenant's push gets streams while the first one's broadcast runs);
    `timeout_seconds` bounds each attempt, `retry` the attempts per notification and the waits
    between them (`APNS_RETRY.without_sleep()` in tests).
    """

    def __init__(
        self,
        *,
        production_url: str,
        sandbox_url: str,
        verify: ssl.SSLContext | bool = True,
        max_concurrency: int = 256,
        tenant_max_concurrency: int = 128,
        max_connections: int = 2,
        retry: RetryPolicy = APNS_RETRY,
        max_retry_after_seconds: float = MAX_RETRY_AFTER_SECONDS,
        timeout_seconds: float = 10.0,
        clock: Clock = time.time,
    ) -> None:
        self.tokens = ProviderTokenCache(clock)
        self.retry = retry
        self.max_retry_after_seconds = max_retry_after_seconds
        self.timeout_seconds = timeout_seconds
        self.tenant_max_concurrency = min(tenant_max_concurrency, max_concurrency)
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._gates = TenantGates(self.tenant_max_concurrency)
        # One connection carries up to the peer's MAX_CONCURRENT_STREAMS (1000 at Apple); a
        # second opens when it is full or going away.
        self._pools: dict[str, H2Client] = {
            env: H2Client(
                url,
                ssl_context=_ssl_context(verify),
                max_connections=max_connections,
                timeout=timeout_seconds,
                max_response_bytes=64 * 1024,
            )
            for env, url in (("production", production_url), ("sandbox", sandbox_url))
        }

    @property
    def pools(self) -> dict[str, H2Client]:
        """The HTTP/2 pool per environment (tests look at reconnects here)."""
        return self._pools

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()

    async def send(
        self, app_id: str, credentials: ApnsCredentials, notification: ApnsNotification
    ) -> ApnsOutcome:
        """Deliver one notification, retrying 429/5xx/timeouts/lost connections with backoff."""
        if len(notification.payload) > MAX_PAYLOAD_BYTES:
            return ApnsOutcome(0, "PayloadTooLarge", 0)
        pool = self._pools[notification.environment]
        headers = [
            ("authorization", ""),
            ("apns-topic", notification.topic),
            ("apns-push-type", notification.push_type),
            ("apns-priority", str(notification.priority)),
            ("content-type", "application/json"),
        ]
        if notification.expiration is not None:
            headers.append(("apns-expiration", str(notification.expiration)))
        if notification.collapse_id is not None:
            headers.append(("apns-collapse-id", notification.collapse_id))
        path = f"/3/device/{notification.token}"
        policy = self.retry
        gate = self._gates.enter(app_id)
        try:
            attempt = 0
            while True:
                attempt += 1
                bearer = self.tokens.bearer(app_id, credentials)
                headers[0] = ("authorization", f"bearer {bearer}")
                retry_after: float | None = None
                async with gate.semaphore, self._semaphore:
                    try:
                        response = await pool.request("POST", path, headers, notification.payload)
                    except H2Timeout:  # sent, the answer late: APNs may have delivered it
                        outcome = ApnsOutcome(0, "Timeout", attempt)
                    except H2QueueTimeout:  # never sent (no stream slot in time): safe to retry
                        outcome = ApnsOutcome(0, "ConnectionError:QueueTimeout", attempt)
                    except H2Error as exc:
                        outcome = ApnsOutcome(0, f"ConnectionError:{type(exc).__name__}", attempt)
                    else:
                        outcome = ApnsOutcome(
                            response.status, _reason(response.status, response.body), attempt
                        )
                        if response.status != 200:
                            retry_after = retry_after_seconds(response.header("retry-after"))
                if outcome.delivered:
                    return outcome
                resigned = outcome.status == 403 and outcome.reason == "ExpiredProviderToken"
                if resigned:
                    resigned = self.tokens.expire(app_id, bearer)
                retryable = resigned or outcome.status in (0, 429) or outcome.status >= 500
                wait = policy.next_wait(attempt, retry_after, self.max_retry_after_seconds)
                if not retryable or wait is None:
                    return outcome
                await policy.sleep(wait)
        finally:
            self._gates.leave(app_id, gate)


def _reason(status: int, content: bytes) -> str | None:
    """APNs' `reason` from an error body, bounded; `HTTP<status>` when there is none."""
    if status == 200:
        return None
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return f"HTTP{status}"
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) and len(reason) <= 64 else f"HTTP{status}"
