"""Per-tenant, per-route fixed-window limits, shared across replicas through Redis.

Limits are parsed and, without Redis, counted by the `limits` library. With Redis, concurrent
checks are batched: every check waiting in the same event-loop turn goes out in one pipeline
(`SET key 0 EX window NX`, `INCR key`, `PTTL key` each), so a busy replica pays one round
trip for many requests instead of one (or, through the library's strategy API, three) each.

High limits are counted in leases: a replica reserves a run of slots in the window with one
`INCRBY` and hands them out locally (`LeasedCounter`), so a tenant allowed 100,000 requests a
minute costs Redis one command per few dozen requests instead of one each. Slots are numbered
globally and a request passes only with a slot inside the limit, so a lease can never admit
more than the limit; unused reserved slots can only refuse a little early. Limits under 2,000
per window, and any window close to its limit, are counted one request at a time (exact).

When Redis is unreachable the API keeps serving (fail open): the check is skipped, logged
and counted, because refusing every request would turn a cache outage into a full outage.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from redis.asyncio import Redis

from stateless.config import Settings
from stateless.kit.observe.metrics import Metrics

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


# Leases: limits from this size up are counted in runs of slots, at most this many at a time.
LEASE_FROM_LIMIT = 2000
MAX_LEASE = 64
_MAX_LEASES = 50_000


def lease_size(limit: int, used: int) -> int:
    """Slots to reserve at once: about 0.1 % of the limit (at most MAX_LEASE), and never more
    than a sixteenth of what is left of the window, so counting turns exact near the limit."""
    if limit < LEASE_FROM_LIMIT:
        return 1
    return max(1, min(MAX_LEASE, limit // 1000, (limit - used) // 16))


class WindowCounter(Protocol):
    async def incr(self, key: str, window_seconds: int, amount: int = 1) -> tuple[int, float]:
        """Add `amount` to the key's current window; return the new count and the window's
        reset time."""
        ...

    async def reset(self) -> None: ...

    async def close(self) -> None: ...


class MemoryWindowCounter:
    """In-process counting on the `limits` library's memory storage (one replica only)."""

    def __init__(self) -> None:
        self._storage = MemoryStorage()
        self._reset_at: dict[str, float] = {}

    async def incr(self, key: str, window_seconds: int, amount: int = 1) -> tuple[int, float]:
        now = time.time()
        count = await self._storage.incr(key, window_seconds, amount)
        reset_at = self._reset_at.get(key)
        if count == 1 or reset_at is None or reset_at <= now:
            reset_at = now + window_seconds if count == 1 else await self._storage.get_expiry(key)
            if len(self._reset_at) > _MAX_REMEMBERED_WINDOWS:
                self._reset_at.clear()
            self._reset_at[key] = reset_at
        return count, reset_at

    async def reset(self) -> None:
        await self._storage.reset()
        self._reset_at.clear()

    async def close(self) -> None:
        return None


class PipelinedRedisCounter:
    """Fixed windows in Redis; all checks queued in one loop turn share one pipeline."""

    def __init__(self, url: str, prefix: str) -> None:
        self._client: Redis = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self._prefix = prefix
        self._pending: list[tuple[str, int, int, asyncio.Future[tuple[int, float]]]] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()

    async def incr(self, key: str, window_seconds: int, amount: int = 1) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, float]] = loop.create_future()
        self._pending.append((f"{self._prefix}:{key}", window_seconds, amount, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(
        self, batch: list[tuple[str, int, int, asyncio.Future[tuple[int, float]]]]
    ) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, window, amount, _ in batch:
                pipe.set(key, 0, ex=window, nx=True)
                pipe.incrby(key, amount)
                pipe.pttl(key)
            results = await pipe.execute()
        except Exception as exc:  # handed to every waiter, who fails open
            for _, _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        now = time.time()
        for index, (_, window, _, future) in enumerate(batch):
            count, pttl = int(results[3 * index + 1]), int(results[3 * index + 2])
            reset_at = now + (pttl / 1000 if pttl > 0 else window)
            if not future.done():
                future.set_result((count, reset_at))

    async def reset(self) -> None:
        keys = [key async for key in self._client.scan_iter(match=f"{self._prefix}:*")]
        if keys:
            await self._client.delete(*keys)

    async def close(self) -> None:
        await self._client.aclose()


@dataclass(slots=True)
class _Lease:
    next: int = 1  # the next slot to hand out
    last: int = 0  # the last slot reserved
    reset_at: float = 0.0
    reserving: bool = False
    waiting: deque[asyncio.Future[tuple[int, float]]] = field(default_factory=deque)


class LeasedCounter:
    """Hands out a window's slots from runs reserved in the shared counter (see the module
    docstring). Per key, one reservation is in flight at a time; checks that find the run
    empty queue for the next one and are served in arrival order."""

    def __init__(self, shared: WindowCounter) -> None:
        self._shared = shared
        self._leases: dict[str, _Lease] = {}
        self._reserving: set[asyncio.Task[None]] = set()

    async def take(self, key: str, window_seconds: int, limit: int) -> tuple[int, float]:
        lease = self._leases.get(key)
        now = time.time()
        if lease is not None and now >= lease.reset_at and not lease.reserving:
            lease.next, lease.last = 1, 0  # a new window: nothing reserved in it yet
        if lease is not None and lease.next <= lease.last and not lease.waiting:
            lease.next += 1
            return lease.next - 1, lease.reset_at
        used = lease.last if lease is not None and now < lease.reset_at else 0
        if lease_size(limit, used) == 1 and (lease is None or not lease.reserving):
            return await self._shared.incr(key, window_seconds)
        if lease is None:
            if len(self._leases) > _MAX_LEASES:
                self._leases.clear()
            lease = self._leases[key] = _Lease()
        waiter: asyncio.Future[tuple[int, float]] = asyncio.get_running_loop().create_future()
        lease.waiting.append(waiter)
        if not lease.reserving:
            lease.reserving = True
            task = asyncio.get_running_loop().create_task(
                self._reserve(key, lease, window_seconds, limit)
            )
            self._reserving.add(task)
            task.add_done_callback(self._reserving.discard)
        return await waiter

    async def _reserve(self, key: str, lease: _Lease, window_seconds: int, limit: int) -> None:
        """Reserve runs until every queued check has its slot (or the shared counter failed:
        each queued check then fails open, as an unleased one would)."""
        try:
            while lease.waiting:
                now = time.time()
                used = lease.last if now < lease.reset_at else 0
                size = lease_size(limit, used)
                last, reset_at = await self._shared.incr(key, window_seconds, size)
                lease.next, lease.last, lease.reset_at = last - size + 1, last, reset_at
                while lease.waiting and lease.next <= lease.last:
                    waiter = lease.waiting.popleft()
                    if not waiter.done():
                        waiter.set_result((lease.next, reset_at))
                    lease.next += 1
        except Exception as exc:  # handed to every queued check, which fails open
            while lease.waiting:
                waiter = lease.waiting.popleft()
                if not waiter.done():
                    waiter.set_exception(exc)
        finally:
            lease.reserving = False

    async def reset(self) -> None:
        self._leases.clear()
        await self._shared.reset()

    async def close(self) -> None:
        await self._shared.close()


class RateLimiter:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._metrics = metrics
        self._defaults = {
            HEALTH_ROUTE: parse_limit(settings.rate_limit_health),
            BOTS_EXECUTE_ROUTE: parse_limit(settings.rate_limit_bots_execute),
        }
        self._fallback = parse_limit(settings.rate_limit_default)
        self._parsed: dict[str, RateLimitItem] = {}
        self._keys: dict[tuple[RateLimitItem, str, str], tuple[str, int]] = {}
        self.uses_redis = bool(settings.redis_url)
        self._counter = LeasedCounter(
            PipelinedRedisCounter(settings.redis_url, f"{settings.redis_key_prefix}:rl")
            if settings.redis_url
            else MemoryWindowCounter()
        )
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
        """Count one request; None when the storage failed and the request goes through."""
        item = self.limit_for(route, overrides)
        keyed = (item, route, bucket)
        found = self._keys.get(keyed)
        if found is None:  # the library builds the key and window anew on each call
            if len(self._keys) > _MAX_REMEMBERED_WINDOWS:
                self._keys.clear()
            found = self._keys[keyed] = (item.key_for(route, bucket), int(item.get_expiry()))
        key, window = found
        now = time.time()
        try:
            count, reset_at = await self._counter.take(key, window, item.amount)
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
            await self._counter.reset()
        except Exception as exc:  # only used by tests and admin tooling
            log.warning("rate_limit_reset_failed", error_type=type(exc).__name__)

    async def close(self) -> None:
        try:
            await self._counter.close()
        except Exception as exc:  # shutdown path: nothing left to protect
            log.debug("rate_limit_close_failed", error_type=type(exc).__name__)
