"""The cleanup engine: exactly the expired rows go, across tenants; SQLite erases for real."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import structlog
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from stateless.config import Settings
from stateless.drafts.models import Draft
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import build_engine, build_sessionmaker
from stateless.kit.observe.metrics import Metrics
from stateless.lifecycle.cleanup import CleanupService
from stateless.lifecycle.policy import TtlPolicy
from stateless.lifecycle.registry import LifecycleRegistry
from tests.conftest import Client, TenantHandle
from tests.support import count_rows, expire_rows, sql

DRAFTS = "/api/v1/drafts"


async def _insert_drafts(settings: Settings, rows: list[tuple[str, str, datetime]]) -> None:
    engine = build_engine(settings)
    kit = PrivacyKit(settings.secret_key)
    try:
        async with build_sessionmaker(engine)() as session:
            now = datetime.now(UTC)
            for app_id, draft_id, expires_at in rows:
                session.add(
                    Draft(
                        app_id=app_id,
                        draft_id=draft_id,
                        created_at=now - timedelta(days=1),
                        expires_at=expires_at,
                        size_bytes=1,
                        content_sealed=kit.encrypt("draft-content", app_id, b"x"),
                    )
                )
            await session.commit()
    finally:
        await engine.dispose()


async def _cleanup(
    settings: Settings, batch_size: int, app_id: str | None = None
) -> dict[str, int]:
    engine = build_engine(settings)
    try:
        registry = LifecycleRegistry(TtlPolicy(settings.max_data_ttl_days))
        registry.register("drafts", Draft)
        service = CleanupService(
            build_sessionmaker(engine),
            registry,
            Metrics(),
            batch_size,
            is_sqlite=settings.is_sqlite,
        )
        report = await service.run_once(app_id=app_id)
        assert report.ok, report.errors
        return report.deleted
    finally:
        await engine.dispose()


@hyp_settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    offsets=st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2", "t3"]), st.integers(min_value=-86400, max_value=86400)
        ),
        min_size=1,
        max_size=40,
    ),
    batch_size=st.integers(min_value=1, max_value=7),
)
async def test_cleanup_deletes_exactly_the_expired_rows(
    settings: Settings, offsets: list[tuple[str, int]], batch_size: int
) -> None:
    await sql(settings, "DELETE FROM drafts")
    now = datetime.now(UTC)
    rows = []
    for app_id, offset in offsets:
        # keep clear of "now" so the run's own clock cannot flip a row
        seconds = offset if abs(offset) > 5 else 3600
        rows.append((app_id, secrets.token_hex(8), now + timedelta(seconds=seconds)))
    await _insert_drafts(settings, rows)
    expected_live = {(a, d) for a, d, e in rows if e > now}
    deleted = await _cleanup(settings, batch_size)
    assert deleted["drafts"] == len(rows) - len(expected_live)
    remaining = {(r[0], r[1]) for r in await sql(settings, "SELECT app_id, draft_id FROM drafts")}
    assert remaining == expected_live


async def test_admin_cleanup_only_touches_this_tenant(
    client: Client, tenant: TenantHandle, other_tenant: TenantHandle, settings: Settings
) -> None:
    for t in (tenant, other_tenant):
        for _ in range(2):
            await client.post(DRAFTS, headers=t.pk, json={"content": "x"})
    await expire_rows(settings, "drafts")
    r = await client.post("/api/v1/admin/cleanup", headers=tenant.sk)
    assert r.json() == {
        "status": "success",
        "deleted": {**r.json()["deleted"], "drafts": 2},
        "tenant": tenant.app_id,
    }
    assert await count_rows(settings, "drafts", "app_id = :a", a=other_tenant.app_id) == 2
    assert await count_rows(settings, "drafts", "app_id = :a", a=tenant.app_id) == 0


async def test_erase_all_data_now(
    client: Client, tenant: TenantHandle, other_tenant: TenantHandle, settings: Settings
) -> None:
    for t in (tenant, other_tenant):
        await client.post(DRAFTS, headers=t.pk, json={"content": "live"})
    r = await client.delete("/api/v1/admin/data", headers=tenant.sk)
    assert r.status_code == 200 and r.json()["deleted"]["drafts"] == 1
    assert await count_rows(settings, "drafts", "app_id = :a", a=tenant.app_id) == 0
    assert await count_rows(settings, "drafts", "app_id = :a", a=other_tenant.app_id) == 1
    # keys still work after erasure
    assert (await client.get("/api/v1/admin/stats", headers=tenant.sk)).json()["items"][
        "drafts"
    ] == 0


async def test_inventory_and_scheduler_health(client: Client, tenant: TenantHandle) -> None:
    inventory = (await client.get("/api/v1/admin/data-inventory", headers=tenant.sk)).json()
    kinds = {k["kind"]: k for k in inventory["kinds"]}
    assert kinds["drafts"]["default_ttl_seconds"] == 86400
    assert kinds["drafts"]["max_ttl_seconds"] == 7 * 86400
    assert kinds["device_tokens"]["max_ttl_seconds"] == 60 * 86400
    assert kinds["affiliate_aggregates"]["max_ttl_seconds"] == 90 * 86400
    health = (await client.get("/api/v1/admin/scheduler-health", headers=tenant.sk)).json()
    assert health["status"] == "disabled"  # the test app runs no background jobs
    assert set(health["scheduler"]) == {
        "is_running",
        "last_run_time",
        "last_run_status",
        "run_count",
        "error_count",
        "started_at",
        "next_run",
        "is_leader",
    }


async def test_scheduler_runs_in_the_lifespan_and_reports(
    make_client, tenant: TenantHandle, settings: Settings
) -> None:
    import asyncio

    client = await make_client(run_background_jobs=True, cleanup_interval_seconds=0.2)
    await client.post(DRAFTS, headers=tenant.pk, json={"content": "soon gone"})
    await expire_rows(settings, "drafts")
    # Wait for a whole pass: the rows go mid-pass, the pass is counted when every kind is done.
    # A generous bound (30 s): on a loaded machine a pass over every kind can take seconds.
    for _ in range(300):
        health = (await client.get("/api/v1/admin/scheduler-health", headers=tenant.sk)).json()
        if await count_rows(settings, "drafts") == 0 and health["scheduler"]["run_count"] >= 1:
            break
        await asyncio.sleep(0.1)
    assert await count_rows(settings, "drafts") == 0
    assert health["status"] == "healthy"
    assert health["scheduler"]["is_leader"] is True and health["scheduler"]["run_count"] >= 1
    metrics = (await client.get("/metrics")).text
    assert 'stateless_cleanup_deleted_rows_total{kind="drafts"} 1.0' in metrics


async def test_a_cohort_that_expires_between_passes_goes_seconds_after_its_expiry(
    make_client, tenant: TenantHandle, settings: Settings
) -> None:
    """With an hour between passes, a pass that saw rows about to expire comes back for them
    shortly after they expire (never sooner than 5 s after itself), not an hour later.

    The first pass runs as the leader starts; the row must still be live then, so its
    lifetime covers a start on a loaded machine (3 s did not: the first pass erased it)."""
    import asyncio
    import time

    ttl = 15
    writer = await make_client()
    created = await writer.post(
        DRAFTS, headers=tenant.pk, json={"content": "short-lived", "ttl_seconds": ttl}
    )
    assert created.status_code == 201, created.text
    started = time.monotonic()
    client = await make_client(run_background_jobs=True, cleanup_interval_seconds=3600)
    health: dict = {}
    seen_live_after_first_pass = False
    for _ in range(900):  # 90 s: far below the hour, generous for a loaded machine
        health = (await client.get("/api/v1/admin/scheduler-health", headers=tenant.sk)).json()
        left = await count_rows(settings, "drafts")
        if health["scheduler"]["run_count"] == 1 and left == 1:
            seen_live_after_first_pass = True
        if left == 0 and health["scheduler"]["run_count"] >= 2:
            break
        await asyncio.sleep(0.1)
    assert seen_live_after_first_pass  # the premise: the first pass left it, still live
    assert await count_rows(settings, "drafts") == 0
    assert health["scheduler"]["run_count"] >= 2  # a second pass, not the hour, erased it
    assert time.monotonic() - started >= ttl - 1  # not erased before it expired


async def test_a_backlog_past_the_count_cap_reads_as_the_cap_and_still_goes(
    settings: Settings,
) -> None:
    """The backlog count stops at its cap (counting millions ran past the statement timeout);
    on Postgres the planner's estimate then says how many more; the pass measures again once
    the figure is deleted, and every expired row goes."""
    await sql(settings, "DELETE FROM drafts")
    now = datetime.now(UTC)
    expired = [("t1", secrets.token_hex(8), now - timedelta(minutes=n + 1)) for n in range(12)]
    live = [("t2", secrets.token_hex(8), now + timedelta(hours=1)) for _ in range(2)]
    await _insert_drafts(settings, expired + live)
    engine = build_engine(settings)
    try:
        registry = LifecycleRegistry(TtlPolicy(settings.max_data_ttl_days))
        registry.register("drafts", Draft)
        service = CleanupService(
            build_sessionmaker(engine),
            registry,
            Metrics(),
            2,
            is_sqlite=settings.is_sqlite,
            backlog_count_cap=5,
        )
        await sql(settings, "ANALYZE drafts")
        backlog = await service.backlog()
        if settings.is_sqlite:
            assert backlog["drafts"].expired_rows == 5
        else:  # past the cap, the planner's estimate (12 expired of 14, by the statistics)
            assert 10 <= backlog["drafts"].expired_rows <= 14
        assert backlog["drafts"].oldest_age_seconds >= 12 * 60  # the oldest, not any five
        with structlog.testing.capture_logs() as logs:
            report = await service.run_once(backlog=backlog)
        assert report.ok and report.deleted["drafts"] == 12
    finally:
        await engine.dispose()
    assert await count_rows(settings, "drafts") == 2
    # The drain's pace line: every row it deleted, in the backlog it ended up measuring.
    drained = [entry for entry in logs if entry["event"] == "cleanup_kind_drained"]
    assert [(e["kind"], e["rows"]) for e in drained] == [("drafts", 12)]
    assert (
        drained[0]["backlog_rows"] == 12 if settings.is_sqlite else drained[0]["backlog_rows"] >= 12
    )
    assert drained[0]["batches"] == 7 and 0 < drained[0]["share"] <= 1  # 6 of 2, one empty


async def test_a_cohort_written_together_is_walked_by_page_and_only_its_expired_rows_go(
    settings: Settings,
) -> None:
    """A cohort inserted together lies on adjacent pages: on Postgres the drain reads on by heap
    page once a batch found it dense (index scans step over every entry already deleted), and
    goes back to the index when a range runs out. Live rows among and around it stay."""
    await sql(settings, "DELETE FROM drafts")
    await sql(settings, "DELETE FROM erasure_counts")
    now = datetime.now(UTC)
    past, future = now - timedelta(minutes=5), now + timedelta(hours=1)
    rows = [("t2", f"before-{i}", future) for i in range(1500)]
    # the cohort, with a live row of another tenant written among every tenth
    for i in range(3000):
        rows.append(("t1", f"cohort-{i}", past))
        if i % 10 == 0:
            rows.append(("t3", f"among-{i}", future))
    rows += [("t2", f"after-{i}", future) for i in range(1500)]
    await _insert_drafts(settings, rows)
    engine = build_engine(settings)
    try:
        registry = LifecycleRegistry(TtlPolicy(settings.max_data_ttl_days))
        registry.register("drafts", Draft)
        service = CleanupService(
            build_sessionmaker(engine), registry, Metrics(), 200, is_sqlite=settings.is_sqlite
        )
        with structlog.testing.capture_logs() as logs:
            report = await service.run_once()
        assert report.ok and report.deleted["drafts"] == 3000
    finally:
        await engine.dispose()
    remaining = {(r[0], r[1]) for r in await sql(settings, "SELECT app_id, draft_id FROM drafts")}
    assert remaining == {(a, d) for a, d, e in rows if e > now}
    counted = await sql(settings, "SELECT app_id, sum(erased) FROM erasure_counts GROUP BY app_id")
    assert [tuple(row) for row in counted] == [("t1", 3000)]
    (drained,) = [entry for entry in logs if entry["event"] == "cleanup_kind_drained"]
    assert drained["rows"] == 3000
    if settings.is_sqlite:
        assert drained["walked"] == 0  # deleting removes SQLite's index entries: nothing to skip
    else:
        assert drained["walked"] >= 10  # most of the 15 batches read by page
