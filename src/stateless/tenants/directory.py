"""A short-lived cache of tenants and key hashes, so authentication costs no database round trip.

Entries live `AUTH_CACHE_SECONDS` (at most 4 s): a revoked or rotated key stops working within
that bound on every replica without any cross-replica messaging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from stateless.tenants.models import ApiKey, Tenant
from stateless.tenants.schemas import KeyRecord, TenantConfig, TenantSnapshot

_MAX_ENTRIES = 10_000

# Core statements built once (compiled once per engine): a cache miss costs two plain reads on
# a pooled autocommit connection, without a session or identity map.
_TENANT = select(Tenant.__table__.c.config_json, Tenant.__table__.c.secrets_sealed).where(
    Tenant.__table__.c.app_id == bindparam("app_id")
)
_KEYS = select(
    ApiKey.__table__.c.key_id,
    ApiKey.__table__.c.kind,
    ApiKey.__table__.c.prefix,
    ApiKey.__table__.c.key_hash,
    ApiKey.__table__.c.expires_at,
    ApiKey.__table__.c.revoked_at,
).where(ApiKey.__table__.c.app_id == bindparam("app_id"))
_ORIGINS = select(Tenant.__table__.c.config_json)


class TenantDirectory:
    def __init__(
        self,
        engine: AsyncEngine,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine  # the autocommit read engine: auth never queues behind a writer
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, TenantSnapshot | None]] = {}
        self._inflight: dict[str, asyncio.Future[TenantSnapshot | None]] = {}
        self._origins: tuple[float, frozenset[str]] | None = None

    async def get(self, app_id: str) -> TenantSnapshot | None:
        now = self._clock()
        entry = self._entries.get(app_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        pending = self._inflight.get(app_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[TenantSnapshot | None] = asyncio.get_running_loop().create_future()
        self._inflight[app_id] = future
        try:
            snapshot = await self._load(app_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters get it, nobody else logs it
            raise
        else:
            future.set_result(snapshot)
            if len(self._entries) >= _MAX_ENTRIES:
                self._evict(now)
            self._entries[app_id] = (now + self._ttl, snapshot)
            return snapshot
        finally:
            self._inflight.pop(app_id, None)

    def _evict(self, now: float) -> None:
        for key in [k for k, (exp, _) in self._entries.items() if exp <= now]:
            del self._entries[key]
        while len(self._entries) >= _MAX_ENTRIES:
            self._entries.pop(next(iter(self._entries)))

    async def _load(self, app_id: str) -> TenantSnapshot | None:
        async with self._engine.connect() as conn:
            tenant = (await conn.execute(_TENANT, {"app_id": app_id})).first()
            if tenant is None:
                return None
            keys = (await conn.execute(_KEYS, {"app_id": app_id})).all()
        return TenantSnapshot(
            app_id=app_id,
            config=TenantConfig.model_validate_json(tenant.config_json or "{}"),
            secrets_sealed=tenant.secrets_sealed,
            keys=tuple(
                KeyRecord(
                    key_id=k.key_id,
                    kind="secret" if k.kind == "secret" else "publishable",
                    prefix=k.prefix,
                    key_hash=k.key_hash,
                    expires_at=k.expires_at,
                    revoked_at=k.revoked_at,
                )
                for k in keys
            ),
        )

    async def cors_origins(self) -> frozenset[str]:
        """Every origin any tenant allows: preflights carry no X-App-ID value to narrow it."""
        now = self._clock()
        if self._origins is not None and self._origins[0] > now:
            return self._origins[1]
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_ORIGINS)).scalars().all()
        origins: set[str] = set()
        for raw in rows:
            origins.update(TenantConfig.model_validate_json(raw or "{}").cors_origins)
        value = frozenset(origins)
        self._origins = (now + max(self._ttl, 1.0), value)
        return value

    def invalidate(self, app_id: str | None = None) -> None:
        if app_id is None:
            self._entries.clear()
            self._origins = None
        else:
            self._entries.pop(app_id, None)
