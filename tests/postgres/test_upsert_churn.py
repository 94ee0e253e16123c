"""Tables rewritten in place by upserts vacuum early (migration 0012): re-registering the same
devices over and over must not grow the table without bound (docs/operations.md)."""

from __future__ import annotations

from stateless.config import Settings
from tests.support import sql


async def test_upserted_tables_vacuum_at_two_percent(settings: Settings) -> None:
    rows = await sql(
        settings,
        "SELECT relname, reloptions FROM pg_class "
        "WHERE relname IN ('ios_device_tokens', 'webpush_subscriptions', 'drafts')",
    )
    options = {name: set(opts or []) for name, opts in rows}
    for table in ("ios_device_tokens", "webpush_subscriptions"):
        assert {
            "fillfactor=90",
            "autovacuum_vacuum_scale_factor=0.02",
            "autovacuum_vacuum_threshold=1000",
        } <= options[table], options[table]
    assert options["drafts"] == set()  # written once, deleted once: the defaults fit
