"""Subscription queries, all scoped to one tenant and to live rows by TenantScopedRepository."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from stateless.kit.data.tenancy import TenantScopedRepository
from stateless.webpush.models import WebPushSubscription

# Columns a push needs; never whole ORM objects, so 100,000 rows never sit in the identity map.
SubscriptionRow = Row[tuple[str, str]]


@functools.cache
def _upsert_statement(dialect: str) -> Any:
    """Built once per dialect with bound parameters (see the device-token upsert)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    columns = ("app_id", "subscriber_hash", "subscription_sealed", "created_at", "expires_at")
    stmt = insert(WebPushSubscription).values({name: bindparam(name) for name in columns})
    return stmt.on_conflict_do_update(
        index_elements=[WebPushSubscription.app_id, WebPushSubscription.subscriber_hash],
        set_={name: stmt.excluded[name] for name in columns[2:]},
    )


class WebPushSubscriptionRepository(TenantScopedRepository[WebPushSubscription]):
    model = WebPushSubscription

    async def upsert(
        self, subscriber_hash: str, subscription_sealed: str, expires_at: datetime
    ) -> None:
        """One INSERT ... ON CONFLICT DO UPDATE; a new subscription restarts the row's life."""
        values: dict[str, Any] = {
            "app_id": self.app_id,
            "subscriber_hash": subscriber_hash,
            "subscription_sealed": subscription_sealed,
            "created_at": self.clock(),
            "expires_at": expires_at,
        }
        dialect = self.session.get_bind().dialect.name
        await self.session.execute(_upsert_statement(dialect), values)

    async def delete_hashes(self, hashes: Sequence[str]) -> int:
        if not hashes:
            return 0
        return await self.delete_where(WebPushSubscription.subscriber_hash.in_(hashes))

    def _push_columns(self) -> Any:
        app_id, live = self._live()
        return select(
            WebPushSubscription.subscriber_hash, WebPushSubscription.subscription_sealed
        ).where(app_id, live)

    async def by_hashes(self, hashes: Sequence[str]) -> Sequence[SubscriptionRow]:
        stmt = self._push_columns().where(WebPushSubscription.subscriber_hash.in_(hashes))
        return (await self.session.execute(stmt)).all()

    async def page_after(self, after_hash: str | None, limit: int) -> Sequence[SubscriptionRow]:
        """Keyset pagination over the primary key: constant memory and cost per page."""
        stmt = self._push_columns()
        if after_hash is not None:
            stmt = stmt.where(WebPushSubscription.subscriber_hash > after_hash)
        stmt = stmt.order_by(WebPushSubscription.subscriber_hash).limit(limit)
        return (await self.session.execute(stmt)).all()
