"""Outbound HTTP to tenant-configured URLs (webhooks, Mastodon) without SSRF.

The host is resolved once and every address is checked by kit/push/targets.py (private,
loopback, link-local including 169.254.169.254, multicast, reserved, unspecified are refused
unless WEBHOOK_ALLOW_PRIVATE_NETWORKS=true), and the connection goes to the checked address itself
(Host header and TLS SNI keep the name), so a second DNS answer cannot redirect it. Redirects
are never followed and the response body read is bounded.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from stateless.bots.tasks.base import TaskFailed
from stateless.kit.push.retry import Retryable, RetryPolicy
from stateless.kit.push.targets import (
    IPAddress,
    TargetError,
    TargetNotAllowed,
)
from stateless.kit.push.targets import resolve_checked as check_target
from stateless.kit.web.errors import Unprocessable

MAX_RESPONSE_BYTES = 64 * 1024
# Webhooks and Mastodon: 0.5-1 s, then 1-1.5 s, ... between tries (capped at 4 s).
OUTBOUND_RETRY = RetryPolicy(
    attempts=3, initial_seconds=0.5, maximum_seconds=4.0, jitter_seconds=0.5
)


class TargetRefusedProblem(Unprocessable):
    code = "target_refused"


class TargetRefused(TaskFailed):
    def __init__(self, detail: str) -> None:
        super().__init__(detail, problem=TargetRefusedProblem)


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    status_code: int
    headers: httpx.Headers
    body: bytes


async def resolve_checked(host: str, port: int, allow_private: bool) -> IPAddress:
    """kit's check, its refusals as task failures (a refused target is a 422 of the task)."""
    try:
        return await check_target(host, port, allow_private)
    except TargetNotAllowed as exc:
        raise TargetRefused(exc.detail) from None
    except TargetError as exc:
        raise TaskFailed(exc.detail, transient=True) from None


async def post_checked(
    client: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    allow_private: bool,
    timeout_seconds: float,
    verify: ssl.SSLContext | bool = True,
) -> OutboundResponse:
    """POST to `url` through the address we checked; transport failures are transient.

    `verify` is the trust for https targets (default: the system store); the certificate is
    checked against the URL's host name, sent as SNI, although we connect to its address.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("the target URL must be http(s)")
    if parts.username or parts.password:
        raise TargetRefused("the target URL must not carry credentials")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ip = await resolve_checked(host, port, allow_private)
    ip_text = f"[{ip}]" if ip.version == 6 else str(ip)
    pinned = urlunsplit((parts.scheme, f"{ip_text}:{port}", parts.path or "/", parts.query, ""))
    default_port = (parts.scheme == "https" and port == 443) or (
        parts.scheme == "http" and port == 80
    )
    host_text = f"[{host}]" if ":" in host else host
    host_header = host_text if default_port else f"{host_text}:{port}"
    request_headers = {**headers, "Host": host_header}
    if parts.scheme == "https":
        # Pooled connections are keyed by address, not name: a TLS connection verified for one
        # host must not carry another host's request, so each https delivery gets its own.
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False, verify=verify) as own:
            return await _send(own, pinned, content, request_headers, host, timeout_seconds)
    return await _send(client, pinned, content, request_headers, None, timeout_seconds)


async def _send(
    client: httpx.AsyncClient,
    url: str,
    content: bytes,
    headers: dict[str, str],
    sni_hostname: str | None,
    timeout_seconds: float,
) -> OutboundResponse:
    extensions: dict[str, object] = {"timeout": httpx.Timeout(timeout_seconds).as_dict()}
    if sni_hostname is not None:
        extensions["sni_hostname"] = sni_hostname
    request = client.build_request(
        "POST", url, content=content, headers=headers, extensions=extensions
    )
    try:
        response = await client.send(request, stream=True, follow_redirects=False)
    except httpx.TimeoutException:
        raise TaskFailed("the target timed out", transient=True) from None
    except httpx.TransportError:
        raise TaskFailed("the target could not be reached", transient=True) from None
    try:
        body = bytearray()
        async for chunk in response.aiter_raw():
            body.extend(chunk[: MAX_RESPONSE_BYTES - len(body)])
            if len(body) >= MAX_RESPONSE_BYTES:
                break
    except httpx.TimeoutException:
        raise TaskFailed("the target timed out", transient=True) from None
    except httpx.TransportError:
        raise TaskFailed("the target broke the connection", transient=True) from None
    finally:
        await response.aclose()
    return OutboundResponse(response.status_code, response.headers, bytes(body))


async def post_with_retries(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    *,
    headers: Callable[[], dict[str, str]],
    on_response: Callable[[OutboundResponse, int], dict[str, Any] | None],
    what: str,
    allow_private: bool,
    attempts: int,
    timeout_seconds: float,
    retry: RetryPolicy = OUTBOUND_RETRY,
) -> dict[str, Any]:
    """POST through the SSRF guard, retrying transient failures (`retry`'s backoff, `attempts`
    tries).

    `headers()` is called per attempt (signatures carry a timestamp); `on_response` returns the
    task result, raises a permanent TaskFailed, or returns None to retry this answer.
    """
    policy = dataclasses.replace(retry, attempts=attempts)
    try:
        async for attempt in policy.attempts_of():
            with attempt:
                try:
                    response = await post_checked(
                        client,
                        url,
                        content=body,
                        headers=headers(),
                        allow_private=allow_private,
                        timeout_seconds=timeout_seconds,
                    )
                except TaskFailed as exc:
                    if not exc.transient:
                        raise
                    raise Retryable(exc.detail) from None
                result = on_response(response, attempt.retry_state.attempt_number)
                if result is not None:
                    return result
                raise Retryable(f"{what} failed ({response.status_code})")
    except Retryable as exc:
        raise TaskFailed(exc.detail, transient=True) from None
    raise TaskFailed(f"{what} did not accept the request", transient=True)  # pragma: no cover
