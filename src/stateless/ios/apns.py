"""APNs over HTTP/2 with token auth: one pooled connection per environment, many streams.

Provider tokens (ES256 JWTs) are cached per tenant and re-signed after 50 minutes (Apple
rejects them after 60 and refuses refreshes more often than every 20). 429 and 5xx answers are
retried with exponential backoff; everything else is returned to the caller as an outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import jwt
import orjson
import structlog

MAX_PAYLOAD_BYTES = 4096
TOKEN_REFRESH_AFTER_SECONDS = 50 * 60
TOKEN_MIN_REFRESH_INTERVAL_SECONDS = 20 * 60

# 400 reasons meaning "this token is dead" (as is any 410): the app registers again on launch.
DEAD_TOKEN_400_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})

ApnsEnvironment = Literal["production", "sandbox"]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

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
        fingerprint = credentials.fingerprint
        if (
            cached is not None
            and cached.fingerprint == fingerprint
            and now - cached.issued_at < self.refresh_after_seconds
        ):
            return cached.jwt
        signed = _SignedToken(fingerprint, self._sign(credentials, now), now)
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
    """The TLS trust for APNs: the system store, or only the given CA bundle (tests, proxies)."""
    if ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(ca_file))


class ApnsClient:
    """Sends notifications; safe to share by every request and task of one process."""

    def __init__(
        self,
        *,
        production_url: str,
        sandbox_url: str,
        verify: ssl.SSLContext | bool = True,
        max_concurrency: int = 256,
        max_attempts: int = 4,
        backoff_seconds: float = 0.1,
        max_backoff_seconds: float = 2.0,
        timeout_seconds: float = 15.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.tokens = ProviderTokenCache(clock)
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(max_concurrency)
        # One HTTP/2 connection carries all streams; a few more only if one is lost or full.
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        self._clients: dict[str, httpx.AsyncClient] = {
            env: httpx.AsyncClient(
                http2=True,
                base_url=url,
                verify=verify,
                limits=limits,
                timeout=httpx.Timeout(timeout_seconds, pool=None),
            )
            for env, url in (("production", production_url), ("sandbox", sandbox_url))
        }

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    def _backoff(self, attempt: int) -> float:
        delay = min(self.max_backoff_seconds, self.backoff_seconds * 2.0 ** (attempt - 1))
        return delay * (0.5 + random.random() / 2)  # jitter, not crypto

    async def send(
        self, app_id: str, credentials: ApnsCredentials, notification: ApnsNotification
    ) -> ApnsOutcome:
        """Deliver one notification, retrying 429/5xx/connection failures with backoff."""
        if len(notification.payload) > MAX_PAYLOAD_BYTES:
            return ApnsOutcome(0, "PayloadTooLarge", 0)
        client = self._clients[notification.environment]
        headers = {
            "apns-topic": notification.topic,
            "apns-push-type": notification.push_type,
            "apns-priority": str(notification.priority),
            "content-type": "application/json",
        }
        if notification.expiration is not None:
            headers["apns-expiration"] = str(notification.expiration)
        if notification.collapse_id is not None:
            headers["apns-collapse-id"] = notification.collapse_id
        path = f"/3/device/{notification.token}"
        outcome = ApnsOutcome(0, "NotAttempted", 0)
        for attempt in range(1, self.max_attempts + 1):
            bearer = self.tokens.bearer(app_id, credentials)
            headers["authorization"] = f"bearer {bearer}"
            async with self._semaphore:
                try:
                    response = await client.post(
                        path, content=notification.payload, headers=headers
                    )
                except httpx.TransportError as exc:
                    outcome = ApnsOutcome(0, f"ConnectionError:{type(exc).__name__}", attempt)
                else:
                    outcome = ApnsOutcome(response.status_code, _reason(response), attempt)
            if outcome.delivered:
                return outcome
            resigned = outcome.status == 403 and outcome.reason == "ExpiredProviderToken"
            if resigned:
                resigned = self.tokens.expire(app_id, bearer)
            retryable = resigned or outcome.status in (0, 429) or outcome.status >= 500
            if not retryable or attempt == self.max_attempts:
                return outcome
            await self._sleep(self._backoff(attempt))
        return outcome


def _reason(response: httpx.Response) -> str | None:
    if response.status_code == 200:
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return f"HTTP{response.status_code}"
    reason = body.get("reason") if isinstance(body, dict) else None
    return (
        reason if isinstance(reason, str) and len(reason) <= 64 else f"HTTP{response.status_code}"
    )
