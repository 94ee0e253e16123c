"""Failed-authentication throttling (SPEC 2): repeated 401s from one client address, per app id
and overall, turn into 429 problems with Retry-After.

Only failures are counted and only failures are refused: a request with a valid key is checked
before this throttle is ever consulted, so nobody can lock a tenant (or a shared NAT address)
out by sending wrong keys. Counting reuses the rate limiter's windows (Redis when configured,
in-process otherwise, fail-open when Redis is down); buckets hold a keyed hash of the address,
never the address itself.
"""

from __future__ import annotations

import asyncio

from fastapi import Request

from stateless.config import Settings
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.observe.metrics import Metrics
from stateless.kit.web.errors import RateLimited
from stateless.kit.web.ratelimit import RateLimiter

PER_APP_ROUTE = "auth.failed.app"
OVERALL_ROUTE = "auth.failed"
_ADDRESS_PURPOSE = "auth-throttle-ip"


def client_bucket(request: Request, privacy: PrivacyKit) -> str:
    """The client address as a keyed hash (rate-limit storage never holds a plaintext IP)."""
    address = request.client.host if request.client else "unknown"
    return privacy.keyed_hash(_ADDRESS_PURPOSE, "", address)[:22]


async def record_failed_authentication(
    request: Request,
    app_id: str | None,
    *,
    settings: Settings,
    privacy: PrivacyKit,
    limiter: RateLimiter,
    metrics: Metrics,
) -> None:
    """Count one failed authentication; raise a 429 problem once this address is past either
    limit. The caller raises its own 401 when this returns."""
    limits = {
        PER_APP_ROUTE: settings.auth_failure_limit_per_app,
        OVERALL_ROUTE: settings.auth_failure_limit,
    }
    address = client_bucket(request, privacy)
    hits = [limiter.hit(OVERALL_ROUTE, address, limits)]
    if app_id:
        hits.append(limiter.hit(PER_APP_ROUTE, f"{address}:{app_id}", limits))
    # gathered: both counters go out in the limiter's one pipeline round trip
    outcomes = await asyncio.gather(*hits)
    refused = [outcome for outcome in outcomes if outcome is not None and not outcome.allowed]
    if not refused:
        return
    worst = max(refused, key=lambda outcome: outcome.reset_seconds)
    metrics.rate_limit_rejections.labels(route=worst.route).inc()
    raise RateLimited(
        "Too many failed authentication attempts from this address; "
        f"retry in {max(1, worst.reset_seconds)} s",
        headers={"Retry-After": str(max(1, worst.reset_seconds))},
    )
