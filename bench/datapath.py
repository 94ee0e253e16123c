"""The data path alone: CPU per operation of our repositories against the floor's raw driver.

    .venv/bin/python -m bench.datapath [--ops 3000] [--concurrency 16]

No HTTP: each side runs the same work in this process, `concurrency` operations at a time, and
the figure is process CPU (all threads) per operation, which a busy machine disturbs far less
than throughput. Ours: `session_scope` + the service's repository call (Scoped Core statements,
lone writes); floor: bench/floor_app.py's statements on an asyncpg pool / one aiosqlite
connection. Both use the same crypto. Postgres (BENCH_DATABASE_URL) and a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.floor_app import DEVICE_TTL, DRAFT_TTL, TASK_TTL, PostgresFloor, SqliteFloor
from stateless.bots.repository import BotTaskRepository
from stateless.config import Settings
from stateless.drafts.models import Draft
from stateless.drafts.repository import DraftRepository
from stateless.ios.repository import DeviceTokenRepository
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import (
    build_engine,
    build_read_engine,
    build_sessionmaker,
    dispose_engines,
    open_direct,
    session_scope,
)
from stateless.migrations.runner import upgrade
from stateless.tenants.schemas import VerifiedAppId

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
APP = "bench"
Op = Callable[[int], Awaitable[None]]


async def cpu_per_op(op: Op, ops: int, concurrency: int) -> float:
    for i in range(50):  # warm-up: pools, statement caches
        await op(-i - 1)
    counter = iter(range(ops))
    started = time.process_time()

    async def worker() -> None:
        for i in counter:
            await op(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) / ops * 1e6


async def run(url: str, floor_url: str, label: str, ops: int, concurrency: int) -> None:
    settings = Settings(
        _env_file=None, database_url=url, environment="test", db_pool_size=concurrency
    )
    await asyncio.to_thread(upgrade, settings)
    kit = PrivacyKit(settings.secret_key)
    # Wired as the app wires it (domains.open_container): lone statements on the direct path.
    engine = build_engine(settings, pool_size=None if settings.is_sqlite else 2)
    read_engine = build_read_engine(settings, engine)
    direct = await open_direct(settings, engine)
    write, read = build_sessionmaker(engine, direct), build_sessionmaker(read_engine, direct)
    tenant = VerifiedAppId(APP)
    floor = (
        SqliteFloor(floor_url.split("///", 1)[1])
        if floor_url.startswith("sqlite")
        else PostgresFloor(floor_url, concurrency)
    )
    await floor.open()
    run_id = uuid.uuid4().hex[:6]
    draft_id = secrets.token_hex(16)
    now = datetime.now(UTC)
    async with session_scope(write) as session:
        await DraftRepository(session, tenant).insert(
            Draft(
                draft_id=draft_id,
                content_sealed=kit.encrypt("draft-content", APP, b"benchmark draft content"),
                size_bytes=23,
                expires_at=now + DRAFT_TTL,
            )
        )

    async def ours_register(i: int) -> None:
        async with session_scope(write) as session:
            await DeviceTokenRepository(session, tenant).upsert(
                kit.keyed_hash("ios-device-id", APP, f"device-{i % 2000}"),
                kit.encrypt_text("apns-token", APP, "ab" * 32),
                "production",
                None,
                datetime.now(UTC) + DEVICE_TTL,
            )

    async def floor_register(i: int) -> None:
        t = datetime.now(UTC)
        await floor.execute(
            "register",
            APP,
            kit.keyed_hash("ios-device-id", APP, f"device-{i % 2000}"),
            kit.encrypt_text("apns-token", APP, "ab" * 32),
            "production",
            None,
            floor.time(t),
            floor.time(t + DEVICE_TTL),
        )

    async def ours_read(i: int) -> None:
        async with session_scope(read) as session:
            draft = await DraftRepository(session, tenant).by_id(draft_id)
            assert draft is not None
            kit.decrypt("draft-content", APP, draft.content_sealed)

    async def floor_read(i: int) -> None:
        row = await floor.fetchrow("draft_read", APP, floor.time(datetime.now(UTC)), draft_id)
        assert row is not None
        kit.decrypt("draft-content", APP, row[0])

    async def ours_create(i: int) -> None:
        async with session_scope(write) as session:
            await DraftRepository(session, tenant).insert(
                Draft(
                    draft_id=f"{run_id}{i:026d}"[-32:],
                    content_sealed=kit.encrypt("draft-content", APP, b"x" * 64),
                    size_bytes=64,
                    expires_at=datetime.now(UTC) + DRAFT_TTL,
                )
            )

    async def floor_create(i: int) -> None:
        t = datetime.now(UTC)
        await floor.execute(
            "draft_create",
            APP,
            f"f{run_id}{i:025d}"[-32:],
            kit.encrypt("draft-content", APP, b"x" * 64),
            64,
            floor.time(t),
            floor.time(t + DRAFT_TTL),
        )

    async def ours_task(i: int) -> None:
        t = datetime.now(UTC)
        async with session_scope(write) as session:
            await BotTaskRepository(session, tenant).insert(
                {
                    "task_id": secrets.token_hex(16),
                    "task_type": "email",
                    "mode": "async",
                    "status": "queued",
                    "context_sealed": kit.encrypt_text("bot-context", APP, "{}"),
                    "base_url": "http://127.0.0.1",
                    "attempts": 0,
                    "next_attempt_at": t,
                    "created_at": t,
                    "expires_at": t + TASK_TTL,
                }
            )

    async def floor_task(i: int) -> None:
        t = datetime.now(UTC)
        await floor.execute(
            "task_insert",
            APP,
            secrets.token_hex(16),
            "email",
            kit.encrypt_text("bot-context", APP, "{}"),
            "http://127.0.0.1",
            floor.time(t),
            floor.time(t),
            floor.time(t + TASK_TTL),
        )

    try:
        for name, ours, ref in (
            ("register-token upsert", ours_register, floor_register),
            ("drafts-read select", ours_read, floor_read),
            ("drafts-create insert", ours_create, floor_create),
            ("bots task insert", ours_task, floor_task),
        ):
            mine = await cpu_per_op(ours, ops, concurrency)
            theirs = await cpu_per_op(ref, ops, concurrency)
            print(
                f"{label} {name}: ours {mine:.0f} us CPU/op, floor {theirs:.0f} us CPU/op, "
                f"floor/ours {theirs / mine:.2f}",
                flush=True,
            )
    finally:
        await floor.close()
        await dispose_engines(engine, read_engine)
        if direct is not None:
            await direct.close()


async def main(ops: int, concurrency: int) -> None:
    name = f"stateless_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = ADMIN_URL.rpartition("/")
    workdir = Path(tempfile.mkdtemp(prefix=name))
    try:
        await run(f"{base}/{name}", f"{base}/{name}", "postgres", ops, concurrency)
        lite = workdir / "bench.db"
        await run(f"sqlite+aiosqlite:///{lite}", f"sqlite:///{lite}", "sqlite", ops, concurrency)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.ops, args.concurrency))
