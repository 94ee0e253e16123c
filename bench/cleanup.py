"""Cleanup benchmark on Postgres: our batched cleanup vs one raw DELETE, and insert latency
during cleanup vs a quiet baseline, measured in the same run.

    .venv/bin/python -m bench.cleanup [--rows 1000000]

Needs a Postgres server (BENCH_DATABASE_URL, else 127.0.0.1:5432); works in a throwaway
database that it drops at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import asyncpg

from stateless.config import Settings
from stateless.drafts.models import Draft
from stateless.kit.data.db import build_engine, build_sessionmaker
from stateless.kit.observe.metrics import Metrics
from stateless.lifecycle.cleanup import CleanupService
from stateless.lifecycle.policy import TtlPolicy
from stateless.lifecycle.registry import LifecycleRegistry
from stateless.migrations.runner import upgrade

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def seed(conn: asyncpg.Connection, expired: int, live: int) -> None:
    await conn.execute("TRUNCATE drafts")
    await conn.execute(
        "INSERT INTO drafts (app_id, draft_id, content_sealed, size_bytes, created_at, expires_at) "
        "SELECT 'app-' || (g % 50), 'e' || g, repeat('x', 64), 64, now() - interval '2 days', "
        "now() - interval '1 day' FROM generate_series(1, $1) g",
        expired,
    )
    await conn.execute(
        "INSERT INTO drafts (app_id, draft_id, content_sealed, size_bytes, created_at, expires_at) "
        "SELECT 'app-' || (g % 50), 'l' || g, repeat('x', 64), 64, now(), now() + interval '1 day' "
        "FROM generate_series(1, $1) g",
        live,
    )
    await conn.execute("VACUUM ANALYZE drafts")


async def insert_latencies(
    pool: asyncpg.Pool, stop: asyncio.Event, workers: int = 4
) -> list[float]:
    samples: list[float] = []

    async def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            started = time.perf_counter()
            await pool.execute(
                "INSERT INTO drafts (app_id, draft_id, content_sealed, size_bytes, created_at, "
                "expires_at) VALUES ('bench', $1, 'x', 1, now(), now() + interval '1 hour')",
                f"w{n}-{i}-{uuid.uuid4().hex[:6]}",
            )
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.002)

    await asyncio.gather(*(worker(n) for n in range(workers)))
    return samples


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] * 1000 if len(samples) > 100 else float("nan")


async def main(rows: int, target_ms: float, deadline: float) -> None:
    name = f"stateless_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base, _, _ = ADMIN_URL.rpartition("/")
    libpq = f"{base}/{name}"
    settings = Settings(
        _env_file=None,
        database_url=libpq,
        environment="test",
        cleanup_batch_size=int(os.environ.get("CLEANUP_BATCH_SIZE", "5000")),
    )
    await asyncio.to_thread(upgrade, settings)
    conn = await asyncpg.connect(libpq)
    pool = await asyncpg.create_pool(libpq, min_size=4, max_size=4)
    engine = build_engine(settings)
    try:
        # 1. raw DELETE
        await seed(conn, rows, rows)
        started = time.perf_counter()
        status = await conn.execute("DELETE FROM drafts WHERE expires_at < now()")
        raw_seconds = time.perf_counter() - started
        assert int(status.split()[-1]) == rows

        # 2. our cleanup, with inserts running alongside
        await seed(conn, rows, rows)
        registry = LifecycleRegistry(TtlPolicy(90))
        registry.register("drafts", Draft)
        service = CleanupService(
            build_sessionmaker(engine),
            registry,
            Metrics(),
            settings.cleanup_batch_size,
            is_sqlite=False,
            batch_target_seconds=target_ms / 1000,
            deadline_seconds=deadline,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(insert_latencies(pool, stop))
        started = time.perf_counter()
        # As the leader does: the backlog measured first, so the pace can meet the deadline.
        report = await service.run_once(backlog=await service.backlog())
        ours_seconds = time.perf_counter() - started
        stop.set()
        busy = await task
        assert report.deleted["drafts"] == rows, report
        live = await conn.fetchval("SELECT count(*) FROM drafts WHERE draft_id LIKE 'l%'")
        assert live == rows, "cleanup touched live rows"

        # 3. the quiet baseline: the same table (seeded again), the same inserts, for as long
        # as the cleanup ran (a longer window meets more of the machine's own hiccups, so a
        # shorter baseline would flatter the quiet side)
        await seed(conn, rows, rows)
        stop = asyncio.Event()
        task = asyncio.create_task(insert_latencies(pool, stop))
        await asyncio.sleep(max(3.0, ours_seconds))
        stop.set()
        quiet = await task

        raw_rate, ours_rate = rows / raw_seconds, rows / ours_seconds
        print(
            f"cleanup: ours {ours_rate:,.0f} rows/s, raw DELETE {raw_rate:,.0f} rows/s, "
            f"ratio {ours_rate / raw_rate:.2f} ({rows:,} expired + {rows:,} live rows, "
            f"batch <= {settings.cleanup_batch_size}, paced: {target_ms:g} ms batches, "
            f"deadline {deadline:g} s)"
        )
        print(
            f"insert p99: during cleanup {p99(busy):.2f} ms, quiet {p99(quiet):.2f} ms, "
            f"ratio {p99(busy) / p99(quiet):.2f} ({len(busy)} vs {len(quiet)} inserts)"
        )
    finally:
        await pool.close()
        await conn.close()
        await engine.dispose()
        admin = await asyncpg.connect(ADMIN_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-target-ms", type=float, default=40.0)
    parser.add_argument("--deadline", type=float, default=45.0, help="seconds, as the leader")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.batch_target_ms, args.deadline))
