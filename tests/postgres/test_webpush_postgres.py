"""Postgres refuses a Web Push subscription row that would outlive MAX_DATA_TTL_DAYS."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from stateless.config import Settings
from tests.support import count_rows, sql

INSERT = (
    "INSERT INTO webpush_subscriptions "
    "(app_id, subscriber_hash, subscription_sealed, created_at, expires_at) "
    "VALUES ('t', :h, 'sealed', now(), now() + :days * interval '1 day')"
)


async def test_check_constraint_refuses_subscriptions_that_outlive_the_cap(
    settings: Settings,
) -> None:
    await sql(settings, INSERT, h="ok", days=90)
    with pytest.raises(IntegrityError, match="ck_webpush_subscriptions_max_ttl"):
        await sql(settings, INSERT, h="too-long", days=91)
    assert await count_rows(settings, "webpush_subscriptions") == 1
