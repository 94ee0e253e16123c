"""Postgres-only guarantees: the TTL CHECK constraint, single-leader cleanup with takeover,
and SIGTERM mid-run leaving no partial state."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from stateless.config import Settings
from stateless.domains import open_container
from stateless.kit.runtime.background import BackgroundJobs
from stateless.lifecycle.scheduler import CleanupScheduler
from stateless.lifecycle.wiring import cleanup_service
from tests.support import count_rows, sql


async def test_check_constraint_refuses_rows_that_outlive_the_cap(settings: Settings) -> None:
    await sql(
        settings, "INSERT INTO tenants (app_id, created_at, config_json) VALUES ('t', now(), '{}')"
    )
    await sql(
        settings,
        "INSERT INTO drafts (app_id, draft_id, content_sealed, size_bytes, created_at, expires_at) "
        "VALUES ('t', 'ok', 'x', 1, now(), now() + interval '90 days')",
    )
    with pytest.raises(IntegrityError, match="ck_drafts_max_ttl"):
        await sql(
            settings,
            "INSERT INTO drafts (app_id, draft_id, content_sealed, size_bytes, created_at, expires_at) "
            "VALUES ('t', 'too-long', 'x', 1, now(), now() + interval '91 days')",
        )
    assert await count_rows(settings, "drafts") == 1


async def _seed_expired(settings: Settings, n: int) -> None:
    await sql(
        settings,
        "INSERT INTO drafts (app_id, draft_id, content_sealed, size_bytes, created_at, expires_at) "
        "SELECT 'a', 'd' || g, 'x', 1, now() - interval '2 days', now() - interval '1 day' "
        "FROM generate_series(1, :n) g",
        n=n,
    )


async def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for `condition`, a generous bound for a loaded machine."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_exactly_one_leader_and_takeover_at_the_next_check(settings: Settings) -> None:
    interval = 0.5
    local = settings.model_copy(update={"cleanup_interval_seconds": interval})
    async with open_container(local) as first_c, open_container(local) as second_c:
        first, second = (
            CleanupScheduler(
                cleanup_service(c), c.background.cleanup, c.metrics, interval_seconds=interval
            )
            for c in (first_c, second_c)
        )
        first_jobs, second_jobs = (
            BackgroundJobs(
                [scheduler.job()],
                container.background.leadership,
                metrics=container.metrics,
                on_leadership=scheduler.on_leadership,
            )
            for scheduler, container in ((first, first_c), (second, second_c))
        )
        # The follower's leadership checks, in order: the takeover is judged by them (the
        # first check after the leader let go must lead), not by a wall clock a loaded machine
        # stretches.
        checks: list[tuple[float, bool]] = []

        def follower_checked(leading: bool) -> None:
            checks.append((asyncio.get_running_loop().time(), leading))
            second.on_leadership(leading)

        second_jobs.on_leadership = follower_checked
        await first_jobs.__aenter__()
        await _until(lambda: first.state.run_count >= 1)
        await second_jobs.__aenter__()
        await _until(lambda: first.state.run_count >= 3 and len(checks) >= 2)
        assert first.state.is_leader and not second.state.is_leader
        # the follower checks leadership each interval but never runs a cleanup
        assert second.state.run_count == 0 and not any(leading for _, leading in checks)
        await _seed_expired(local, 10)
        await first_jobs.stop()
        stopped_at = asyncio.get_running_loop().time()
        await _until(lambda: second.state.is_leader)
        after = [leading for at, leading in checks if at > stopped_at]
        assert after[0] is True, after  # the first check after the release took over
        for _ in range(600):
            if await count_rows(local, "drafts") == 0:
                break
            await asyncio.sleep(0.05)
        assert await count_rows(local, "drafts") == 0
        await second_jobs.stop()


async def test_sigterm_mid_run_leaves_no_partial_state(settings: Settings, tmp_path) -> None:
    """A worker killed with SIGTERM while deleting in batches exits cleanly; the rows left are
    whole, untouched expired rows, and the next run deletes them."""
    total = 20_000
    await _seed_expired(settings, total)
    await sql(
        settings,
        "INSERT INTO drafts (app_id, draft_id, content_sealed, size_bytes, created_at, expires_at) "
        "VALUES ('a', 'live', 'x', 1, now(), now() + interval '1 day')",
    )
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SECRET_KEY": settings.secret_key,
        "AFFILIATE_SALT": settings.affiliate_salt,
        "CLEANUP_BATCH_SIZE": "100",
        "CLEANUP_INTERVAL_SECONDS": "3600",
        "ENVIRONMENT": "test",
        "LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stateless.cli",
        "worker",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    deadline = asyncio.get_running_loop().time() + 30
    while await count_rows(settings, "drafts") > total - 300:
        assert asyncio.get_running_loop().time() < deadline, "worker never started deleting"
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), timeout=20)
    assert proc.returncode == 0
    left = await count_rows(settings, "drafts", "draft_id <> 'live'")
    assert 0 <= left < total
    # every remaining row is a whole, untouched expired row
    assert (
        await count_rows(settings, "drafts", "draft_id <> 'live' AND content_sealed = 'x'") == left
    )
    assert await count_rows(settings, "drafts", "draft_id = 'live'") == 1
    async with open_container(settings) as container:
        report = await cleanup_service(container).run_once()
    assert report.deleted["drafts"] == left
    assert await count_rows(settings, "drafts") == 1
    _ = datetime.now(UTC) - timedelta(0)


async def test_cleanup_steps_back_while_other_sessions_work(settings: Settings) -> None:
    """Each batch counts the other sessions working in the database (an open transaction
    here): with one at work the pace falls to the least share, and every expired row still
    goes; alone, the database is not counted busy."""
    local = settings.model_copy(update={"cleanup_batch_size": 100})
    await _seed_expired(local, 2_000)
    other = create_async_engine(local.database_url)
    try:
        async with open_container(local) as container:
            service = cleanup_service(container)
            registry = container.metrics.registry

            def gauge(name: str) -> float | None:
                return registry.get_sample_value(name, {"kind": "drafts"})

            async with other.connect() as conn, conn.begin():
                await conn.execute(text("SELECT 1"))  # idle in transaction: a session at work
                report = await service.run_once()
            assert report.deleted["drafts"] == 2_000
            assert await count_rows(local, "drafts") == 0
            busy = gauge("stateless_cleanup_others_at_work")
            assert busy is not None and busy >= 0.9
            assert gauge("stateless_cleanup_share") == pytest.approx(0.1)

            await _seed_expired(local, 2_000)
            report = await service.run_once()
            assert report.deleted["drafts"] == 2_000
            alone = gauge("stateless_cleanup_others_at_work")
            assert alone is not None and alone < 0.5
    finally:
        await other.dispose()
