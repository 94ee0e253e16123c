"""`python -m bench.scale` at a tiny size: every section runs end to end and the summary prints.

The real script in a subprocess (about two minutes): its own Postgres databases on the suite's
server (BENCH_DATABASE_URL, else the admin URL tests/conftest.py found), the suite's Redis,
`stateless serve` processes, the APNs and Web Push peers. It never asserts a speed: at this
size the figures say nothing, only that the benchmark still works.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.services import Services

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("load", "datapath", "sqlite", "broadcast", "deletion", "bloat")


async def _scale_databases(admin_url: str) -> list[str]:
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'stateless_scale_%'"
        )
        return [r["datname"] for r in rows]
    finally:
        await conn.close()


async def test_bench_scale_smoke(services: Services) -> None:
    admin_url = os.environ.get("BENCH_DATABASE_URL") or services.postgres_admin_url
    before = set(await _scale_databases(admin_url))
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": admin_url,
        "BENCH_REDIS_URL": os.environ.get("BENCH_REDIS_URL") or services.redis_url,
        "PYTHONUNBUFFERED": "1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scale",
            "--scale",
            "0.0005",
            "--seconds",
            "2",
            "--bloat-seconds",
            "3",
            "--cleanup-interval",  # the default (60 s) would wait a minute per cohort
            "1",
            "--sqlite-rounds",
            "1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = done.stdout[-6000:] + done.stderr[-4000:]
    assert done.returncode == 0, report
    assert "Traceback" not in done.stdout + done.stderr, report
    summary = done.stdout.split("== bench.scale summary ==", 1)
    assert len(summary) == 2, report
    rows = [line.split() for line in summary[1].splitlines()[2:] if line.strip()]
    for section in SECTIONS:
        mine = [r for r in rows if r[0] == section]
        assert mine, f"no summary row for {section}\n{report}"
        assert all(r[-1] in ("PASS", "FAIL") for r in mine), report
    # the databases it made are gone again (other runs' may come and go meanwhile)
    assert not (set(await _scale_databases(admin_url)) - before), report
