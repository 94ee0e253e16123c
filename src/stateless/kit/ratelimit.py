"""Per-tenant, per-route fixed-window limits on the `limits` library's storages (memory, or Redis
to share them across replicas).

When Redis is unreachable the API keeps serving (fail open): the check is skipped, logged
and counted, because refusing every request would turn a cache outage into a full outage.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from stateless.config import Settings
from stateless.kit.metrics import Metrics

log = structlog.get_logger("stateless.ratelimit")

HEALTH_ROUTE = "health"
_MAX_REMEMBERED_WINDOWS = 50_000
BOTS_EXECUTE_ROUTE = "bots.execute"


@dataclass(frozen=True, slots=True)
class RateLimitOutcome:
    allowed: bool
    route: str
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        """IETF draft fields: RateLimit-Policy and RateLimit (plus Retry-After when refused)."""
        headers = {
            "RateLimit-Policy": f'"{self.route}";q={self.limit};w={self.window_seconds}',
            "RateLimit": f'"{self.route}";r={self.remaining};t={self.reset_seconds}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_seconds))
        return headers


def parse_limit(text: str) -> RateLimitItem:
    """Parse `30/minute`-style text; raises ValueError with a readable message."""
    try:
        return parse(text)
    except Exception as exc:
        raise ValueError(f"invalid rate limit {text!r} (expected e.g. 30/minute)") from exc


class RateLimiter:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._metrics = metrics
        self._defaults = {
            HEALTH_ROUTE: parse_limit(settings.rate_limit_health),
            BOTS_EXECUTE_ROUTE: parse_limit(settings.rate_limit_bots_execute),
        }
        self._fallback = parse_limit(settings.rate_limit_default)
        self._parsed: dict[str, RateLimitItem] = {}
        self.uses_redis = bool(settings.redis_url)
        storage: Storage
        if settings.redis_url:
            storage = RedisStorage(
                "async+" + settings.redis_url,
                implementation="redispy",
                key_prefix=f"{settings.redis_key_prefix}:rl",
                socket_connect_timeout=0.5,
                socket_timeout=0.5,
            )
        else:
            storage = MemoryStorage()
        self._storage = storage
        self._reset_at: dict[str, float] = {}
        self._last_fail_log = 0.0

    def limit_for(self, route: str, overrides: dict[str, str] | None = None) -> RateLimitItem:
        text = (overrides or {}).get(route) or (overrides or {}).get("default")
        if text:
            item = self._parsed.get(text)
            if item is None:
                item = parse_limit(text)
                self._parsed[text] = item
            return item
        return self._defaults.get(route, self._fallback)

    async def hit(
        self, route: str, bucket: str, overrides: dict[str, str] | None = None
    ) -> RateLimitOutcome | None:
        """Count one request; None when the storage failed and the request goes through.

        One storage round trip per request: the fixed window's counter comes back from `incr`,
        and its reset time is learned once per window and key, then remembered locally.
        """
        item = self.limit_for(route, overrides)
        window = int(item.get_expiry())
        key = item.key_for(route, bucket)
        now = time.time()
        try:
            count = await self._storage.incr(key, window)
            reset_at = self._reset_at.get(key)
            if count == 1:
                reset_at = now + window
            elif reset_at is None or reset_at <= now:
                reset_at = await self._storage.get_expiry(key)
            if len(self._reset_at) > _MAX_REMEMBERED_WINDOWS:
                self._reset_at.clear()
            self._reset_at[key] = reset_at
        except Exception as exc:  # isolation boundary: Redis down must not take the API down
            self._metrics.redis_fail_open.inc()
            if now - self._last_fail_log > 5:
                self._last_fail_log = now
                log.warning("rate_limit_storage_unavailable", error_type=type(exc).__name__)
            return None
        reset = max(0, math.ceil(reset_at - now))
        return RateLimitOutcome(
            allowed=count <= item.amount,
            route=route,
            limit=item.amount,
            window_seconds=window,
            remaining=max(0, item.amount - count),
            reset_seconds=min(reset, window),
        )

    async def reset(self) -> None:
        try:
            await self._storage.reset()
        except Exception as exc:  # only used by tests and admin tooling
            log.warning("rate_limit_reset_failed", error_type=type(exc).__name__)

    async def close(self) -> None:
        closer: Any = getattr(self._storage, "close", None)
        if closer is not None:
            try:
                await closer()
            except Exception as exc:  # shutdown path: nothing left to protect
                log.debug("rate_limit_close_failed", error_type=type(exc).__name__)
