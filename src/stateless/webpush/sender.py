"""Delivery to push services behind one small interface, so a faster engine can be swapped in.

`PushEngine` posts one request and reports the answer; `HttpcoreEngine` is the default: httpcore
connection pools (HTTP/2 where the push service offers it, else HTTP/1.1) per origin, whose
every connection goes to an address checked by the webhook SSRF guard after DNS resolution
(the TLS name stays the push service's host). Redirects are never followed.

`WebPushSender` adds what the protocol asks around the engine: bounded concurrency (per process
and per tenant), and 429 or 5xx answers retried by the shared policy (kit/push/retry.py) after
`Retry-After` or a jittered backoff; a Retry-After longer than a cap is reported, not awaited.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpcore
import structlog

from stateless.kit.push.h2client import H2Client, H2ConnectError, H2Error, H2QueueTimeout, H2Timeout
from stateless.kit.push.pushing import TenantGates
from stateless.kit.push.retry import RetryPolicy, retry_after_seconds
from stateless.kit.push.targets import TargetError, TargetNotAllowed, resolve_checked

# Three tries, 0.1 s then 0.2 s apart (plus up to 0.1 s of jitter), unless Retry-After says more.
WEBPUSH_RETRY = RetryPolicy(
    attempts=3, initial_seconds=0.1, maximum_seconds=2.0, jitter_seconds=0.1
)
MAX_RETRY_AFTER_SECONDS = 10.0
# Failures without an answer that are tried again: never sent (QueueTimeout: no duplicate
# possible), and, as before, sent but late (Timeout: a duplicate is judged better than a loss).
_RETRIED_REASONS = frozenset({"ConnectionError", "Timeout", "QueueTimeout"})

# Request headers: (lower-case name, value) pairs, as HTTP/2 sends them.
Headers = Sequence[tuple[str, str]]

log = structlog.get_logger("stateless.webpush.sender")


@dataclass(frozen=True, slots=True)
class EngineResponse:
    status: int
    retry_after: str | None = None


class EngineError(Exception):
    """Nothing was answered (connection refused, timeout, refused address); `reason` says why:
    "QueueTimeout" (never sent: no connection or stream slot in time, safe to send again),
    "Timeout" (sent, the answer late: the service may have accepted it), "ConnectionError"..."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A subscription's endpoint split once: `origin` (https://host[:port], the VAPID `aud`)
    and `path` (with its query)."""

    origin: str
    path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """EngineError("EndpointNotAllowed") unless an https URL without credentials."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            raise EngineError("EndpointNotAllowed") from None
        if parts.scheme != "https" or not host or parts.username or parts.password:
            raise EngineError("EndpointNotAllowed")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(f"https://{parts.netloc}", path)

    @property
    def url(self) -> str:
        return self.origin + self.path


class PushEngine(Protocol):
    """Posts one encrypted message to a push service endpoint and returns its status."""

    async def post(self, endpoint: Endpoint, body: bytes, headers: Headers) -> EngineResponse: ...

    async def aclose(self) -> None: ...


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each new connection's host once, refuses private addresses, connects to the
    checked address itself: a second DNS answer cannot point a connection elsewhere."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            address = await resolve_checked(host, port, self.allow_private)
        except TargetError as exc:
            raise httpcore.ConnectError(
                "EndpointNotAllowed"
                if isinstance(exc, TargetNotAllowed)
                else "EndpointUnresolvable"
            ) from None
        return await self._inner.connect_tcp(
            str(address),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not push services")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def build_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system trust store, or only the given CA bundle (WEBPUSH_CA_FILE: tests, proxies)."""
    context = (
        ssl.create_default_context(cafile=str(ca_file))
        if ca_file is not None
        else ssl.create_default_context()
    )
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


class HttpcoreEngine:
    """The default engine: one httpcore pool for every push service, guarded connections."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        allow_private: bool,
        timeout_seconds: float = 15.0,
        max_connections: int = 64,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=60.0,
            http1=True,
            http2=True,
            network_backend=_GuardedBackend(allow_private),
        )
        self._timeouts = {
            "connect": timeout_seconds,
            "read": timeout_seconds,
            "write": timeout_seconds,
            "pool": timeout_seconds,
        }

    async def post(self, endpoint: Endpoint, body: bytes, headers: Headers) -> EngineResponse:
        try:
            response = await self._pool.request(
                "POST",
                endpoint.url,
                headers=list(headers),
                content=body,
                extensions={"timeout": self._timeouts},
            )
        except httpcore.PoolTimeout:  # no connection in time: nothing was sent
            raise EngineError("QueueTimeout") from None
        except httpcore.TimeoutException:
            raise EngineError("Timeout") from None
        except httpcore.ConnectError as exc:
            reason = str(exc)
            if reason not in ("EndpointNotAllowed", "EndpointUnresolvable"):
                reason = "ConnectionError"
            raise EngineError(reason) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol):
            raise EngineError("ConnectionError") from None
        retry_after = None
        for name, value in response.headers:
            if name.lower() == b"retry-after":
                retry_after = value.decode("latin-1")
        return EngineResponse(response.status, retry_after)

    async def aclose(self) -> None:
        await self._pool.aclose()


class H2Engine:
    """HTTP/2 on kit/push/h2client (the APNs engine): one small client per push-service origin.

    Its connections go to the address the SSRF guard checked (TLS verifies the host name).
    An origin that does not offer HTTP/2, and any origin past `max_origins`, goes through the
    `fallback` engine (httpcore, HTTP/1.1) instead.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        allow_private: bool,
        fallback: PushEngine,
        timeout_seconds: float = 15.0,
        max_origins: int = 256,
    ) -> None:
        self.ssl_context = ssl_context  # shared by the H2Clients only: they set its ALPN to h2
        self.allow_private = allow_private
        self.fallback = fallback
        self.timeout_seconds = timeout_seconds
        self.max_origins = max_origins
        self._clients: dict[str, H2Client] = {}
        self._http1_origins: set[str] = set()

    async def _resolve(self, host: str, port: int) -> str:
        try:
            return str(await resolve_checked(host, port, self.allow_private))
        except TargetError as exc:
            raise EngineError(
                "EndpointNotAllowed"
                if isinstance(exc, TargetNotAllowed)
                else "EndpointUnresolvable"
            ) from None

    def _client(self, origin: str) -> H2Client | None:
        client = self._clients.get(origin)
        if client is None and origin not in self._http1_origins:
            if len(self._clients) >= self.max_origins:
                return None
            client = H2Client(
                origin,
                ssl_context=self.ssl_context,
                max_connections=2,
                timeout=self.timeout_seconds,
                connect_timeout=self.timeout_seconds,
                resolve=self._resolve,
            )
            self._clients[origin] = client
        return client

    async def post(self, endpoint: Endpoint, body: bytes, headers: Headers) -> EngineResponse:
        origin = endpoint.origin
        client = self._client(origin)
        if client is None:
            return await self.fallback.post(endpoint, body, headers)
        try:
            response = await client.request("POST", endpoint.path, headers, body)
        except H2ConnectError as exc:
            if "does not offer HTTP/2" not in str(exc):
                raise EngineError("ConnectionError") from None
            # An HTTP/1.1-only push service: remembered, then served by the fallback.
            self._http1_origins.add(origin)
            stale = self._clients.pop(origin, None)
            if stale is not None:
                await stale.aclose()
            return await self.fallback.post(endpoint, body, headers)
        except H2QueueTimeout:
            raise EngineError("QueueTimeout") from None
        except H2Timeout:
            raise EngineError("Timeout") from None
        except H2Error:
            raise EngineError("ConnectionError") from None
        return EngineResponse(response.status, response.header("retry-after"))

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self.fallback.aclose()


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What the push service finally answered; status 0 means no answer (see `reason`)."""

    status: int
    reason: str | None = None
    attempts: int = 0

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        """404 and 410: the subscription is expired or unsubscribed; delete it."""
        return self.status in (404, 410)


class WebPushSender:
    """Retries and bounded concurrency around an engine; safe to share process-wide.

    `max_concurrency` caps the requests in flight in the process, `tenant_max_concurrency` those
    of one tenant (a second tenant's push gets slots while the first one's broadcast runs).
    """

    def __init__(
        self,
        engine: PushEngine,
        *,
        max_concurrency: int = 256,
        tenant_max_concurrency: int = 128,
        retry: RetryPolicy = WEBPUSH_RETRY,
        max_retry_after_seconds: float = MAX_RETRY_AFTER_SECONDS,
    ) -> None:
        self.engine = engine
        self.retry = retry
        self.max_retry_after_seconds = max_retry_after_seconds
        self.tenant_max_concurrency = min(tenant_max_concurrency, max_concurrency)
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._gates = TenantGates(self.tenant_max_concurrency)

    async def aclose(self) -> None:
        await self.engine.aclose()

    async def send(
        self, app_id: str, endpoint: Endpoint, body: bytes, headers: Callable[[], Headers]
    ) -> PushOutcome:
        """Deliver one message; `headers()` is called per attempt (the VAPID token may renew)."""
        policy = self.retry
        gate = self._gates.enter(app_id)
        try:
            attempt = 0
            while True:
                attempt += 1
                retry_after: float | None = None
                async with gate.semaphore, self._semaphore:
                    try:
                        answer = await self.engine.post(endpoint, body, headers())
                    except EngineError as exc:
                        outcome = PushOutcome(0, exc.reason, attempt)
                    except Exception as exc:  # isolation boundary: one message, counted, no URL
                        log.warning("webpush_engine_error", error_type=type(exc).__name__)
                        outcome = PushOutcome(0, "EngineError", attempt)
                    else:
                        status = answer.status
                        if 200 <= status < 300:
                            return PushOutcome(status, None, attempt)
                        outcome = PushOutcome(status, f"HTTP{status}", attempt)
                        retry_after = retry_after_seconds(answer.retry_after)
                retryable = (
                    outcome.status == 429
                    or outcome.status >= 500
                    or (outcome.status == 0 and outcome.reason in _RETRIED_REASONS)
                )
                wait = policy.next_wait(attempt, retry_after, self.max_retry_after_seconds)
                if not retryable or wait is None:
                    return outcome
                await policy.sleep(wait)
        finally:
            self._gates.leave(app_id, gate)
