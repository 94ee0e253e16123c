"""Bulk data for bench.scale: throwaway Postgres databases and SQLite files, filled fast.

Postgres rows are made on the server (INSERT ... SELECT over generate_series, two sessions in
parallel, synchronous_commit off): the rows of other tenants never reach Python and need not
decrypt, only look like the real ones (a 43-character keyed hash, a 135-character sealed token,
the same columns and TTLs). Rows that must decrypt (the broadcast tenant's) are sealed here with
PrivacyKit, as bench/push.py seeds them, and sent with COPY (asyncpg copy_records_to_table).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
OTHER_TENANTS = 1000
SEALED_TOKEN_CHARS = 135  # PrivacyKit.encrypt_text of a 64-hex APNs token
SEALED_DRAFT_CHARS = 135
SEALED_SUBSCRIPTION_CHARS = 290
CHUNK = 200_000
TTL = timedelta(days=30)

# A 43-character stand-in for a keyed hash, unique per (series number, salt).
_HASH = "left(encode(sha256(int8send(g) || '{salt}'::bytea), 'hex'), 43)"
_TENANT = f"'scale-' || lpad((g % {OTHER_TENANTS})::text, 4, '0')"

_FILL = {
    "ios_device_tokens": (
        "INSERT INTO ios_device_tokens (app_id, device_hash, token_sealed, environment, topic,"
        " created_at, expires_at) SELECT {tenant}, {hash}, repeat('t', {sealed}), 'production',"
        " NULL, now(), now() + interval '30 days' FROM generate_series($1::bigint, $2::bigint) g"
    ),
    "drafts": (
        "INSERT INTO drafts (app_id, draft_id, content_sealed, size_bytes, created_at,"
        " expires_at) SELECT {tenant}, left({hash}, 32), repeat('d', {sealed}), 64, now(),"
        " now() + interval '30 days' FROM generate_series($1::bigint, $2::bigint) g"
    ),
    "entitlement_sources": (
        "INSERT INTO entitlement_sources (app_id, source_hash, store, subject_hash,"
        " subject_sealed, reference_sealed, product_id, state, environment, period_type,"
        " will_renew, purchased_at, period_ends_at, event_at, last_event, verified_at,"
        " created_at, expires_at) SELECT {tenant}, {hash}, 'app_store',"
        " left(encode(sha256(int8send(g) || 'subject'::bytea), 'hex'), 43), repeat('u', {sealed}),"
        " repeat('r', {sealed}), 'pro.monthly', 'active', 'production', 'normal', true, now(),"
        " now() + interval '30 days', now(), 'SUBSCRIBED', now(), now(), now() + interval '30 days'"
        " FROM generate_series($1::bigint, $2::bigint) g"
    ),
    "webpush_subscriptions": (
        "INSERT INTO webpush_subscriptions (app_id, subscriber_hash, subscription_sealed,"
        " created_at, expires_at) SELECT {tenant}, {hash}, repeat('s', {sealed}), now(),"
        " now() + interval '30 days' FROM generate_series($1::bigint, $2::bigint) g"
    ),
}
_SEALED = {
    "ios_device_tokens": SEALED_TOKEN_CHARS,
    "drafts": SEALED_DRAFT_CHARS,
    "webpush_subscriptions": SEALED_SUBSCRIPTION_CHARS,
    "entitlement_sources": SEALED_DRAFT_CHARS,
}


class Databases:
    """Every Postgres database this run created, dropped (WITH FORCE) by `drop_all`, also after
    an interrupted run."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def create(self, label: str) -> str:
        name = f"stateless_scale_{label}_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.names.append(name)
        base, _, _ = ADMIN_URL.rpartition("/")
        return f"{base}/{name}"

    async def drop_all(self) -> None:
        if not self.names:
            return
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            while self.names:
                name = self.names.pop()
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def fill(
    url: str,
    table: str,
    rows: int,
    salt: str = "a",
    sessions: int = 2,
    expires_at: datetime | None = None,
) -> float:
    """`rows` rows of other tenants into `table`, server side; returns the seconds taken.
    `expires_at`: one expiry for all of them (a cohort), instead of 30 days from now."""
    sql = _FILL[table].format(tenant=_TENANT, hash=_HASH.format(salt=salt), sealed=_SEALED[table])
    extra: tuple[datetime, ...] = ()
    if expires_at is not None:
        expiry = "now() + interval '30 days' FROM"
        assert sql.count(expiry) == 1, table
        sql = sql.replace(expiry, "$3::timestamptz FROM")
        extra = (expires_at,)
    ranges = [(lo, min(lo + CHUNK, rows) - 1) for lo in range(0, rows, CHUNK)]
    started = time.perf_counter()

    async def worker() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET synchronous_commit = off")
            while ranges:
                lo, hi = ranges.pop()
                await conn.execute(sql, lo, hi, *extra)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(sessions)))
    return time.perf_counter() - started


async def vacuum_analyze(url: str, *tables: str) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        for table in tables:
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def sizes(url: str, *tables: str) -> dict[str, tuple[int, int]]:
    """Per table: (heap + TOAST bytes, index bytes)."""
    conn = await asyncpg.connect(url)
    try:
        out = {}
        for table in tables:
            row = await conn.fetchrow(
                "SELECT pg_table_size($1::regclass) AS t, pg_indexes_size($1::regclass) AS i",
                table,
            )
            assert row is not None
            out[table] = (int(row["t"]), int(row["i"]))
        return out
    finally:
        await conn.close()


def describe_sizes(found: dict[str, tuple[int, int]]) -> str:
    return ", ".join(
        f"{table} {t / 2**20:,.0f} MB + indexes {i / 2**20:,.0f} MB"
        for table, (t, i) in found.items()
    )


async def seed_sealed_devices(url: str, app_id: str, secret_key: str, count: int) -> float:
    """`count` devices of one tenant that a push can open: device-<i> hashed and token <i>
    sealed exactly as register-token does (bench/push.py's rows), sent with COPY."""
    from stateless.ios.service import DEVICE_ID_PURPOSE, TOKEN_PURPOSE
    from stateless.kit.crypto.sealing import PrivacyKit

    kit = PrivacyKit(secret_key)
    now = datetime.now(UTC)
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        for lo in range(0, count, 50_000):
            records = [
                (
                    app_id,
                    kit.keyed_hash(DEVICE_ID_PURPOSE, app_id, f"device-{i}"),
                    kit.encrypt_text(TOKEN_PURPOSE, app_id, f"{i:064x}"),
                    "production",
                    None,
                    now,
                    now + TTL,
                )
                for i in range(lo, min(lo + 50_000, count))
            ]
            await conn.copy_records_to_table(
                "ios_device_tokens",
                records=records,
                columns=[
                    "app_id",
                    "device_hash",
                    "token_sealed",
                    "environment",
                    "topic",
                    "created_at",
                    "expires_at",
                ],
            )
    finally:
        await conn.close()
    return time.perf_counter() - started


async def seed_sealed_subscriptions(
    url: str, app_id: str, secret_key: str, count: int, peer_url: str, p256dh: str, auth: str
) -> float:
    """`count` Web Push subscriptions of one tenant, sealed as bench/webpush.py seeds them."""
    import orjson

    from stateless.kit.crypto.sealing import PrivacyKit
    from stateless.webpush.service import SUBSCRIBER_PURPOSE, SUBSCRIPTION_PURPOSE

    kit = PrivacyKit(secret_key)
    now = datetime.now(UTC)
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        for lo in range(0, count, 20_000):
            records = [
                (
                    app_id,
                    kit.keyed_hash(SUBSCRIBER_PURPOSE, app_id, f"s-{i}"),
                    kit.encrypt(
                        SUBSCRIPTION_PURPOSE,
                        app_id,
                        orjson.dumps(
                            {"endpoint": f"{peer_url}/push/{i}", "p256dh": p256dh, "auth": auth}
                        ),
                    ),
                    now,
                    now + TTL,
                )
                for i in range(lo, min(lo + 20_000, count))
            ]
            await conn.copy_records_to_table(
                "webpush_subscriptions",
                records=records,
                columns=[
                    "app_id",
                    "subscriber_hash",
                    "subscription_sealed",
                    "created_at",
                    "expires_at",
                ],
            )
    finally:
        await conn.close()
    return time.perf_counter() - started


# -- SQLite ---------------------------------------------------------------------------------
def _sqlite_time(value: datetime) -> str:
    """How the app's UTCDateTime stores a time in SQLite (naive UTC text)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def fill_sqlite(path: Path, tokens: int, drafts: int) -> float:
    """Other tenants' device tokens and drafts, executemany in transactions of 100,000 rows."""
    import hashlib

    now = datetime.now(UTC)
    created, expires = _sqlite_time(now), _sqlite_time(now + TTL)

    def tenant(i: int) -> str:
        return f"scale-{i % OTHER_TENANTS:04d}"

    def digest(i: int, salt: bytes) -> str:
        return hashlib.sha256(i.to_bytes(8, "big") + salt).hexdigest()[:43]

    started = time.perf_counter()
    db = sqlite3.connect(path, timeout=30)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=30000")
        for count, sql, make in (
            (
                tokens,
                "INSERT INTO ios_device_tokens (app_id, device_hash, token_sealed, environment,"
                " topic, created_at, expires_at) VALUES (?, ?, ?, 'production', NULL, ?, ?)",
                lambda i: (tenant(i), digest(i, b"t"), "t" * SEALED_TOKEN_CHARS, created, expires),
            ),
            (
                drafts,
                "INSERT INTO drafts (app_id, draft_id, content_sealed, size_bytes, created_at,"
                " expires_at) VALUES (?, ?, ?, 64, ?, ?)",
                lambda i: (
                    tenant(i),
                    digest(i, b"d")[:32],
                    "d" * SEALED_DRAFT_CHARS,
                    created,
                    expires,
                ),
            ),
        ):
            for lo in range(0, count, 100_000):
                with db:
                    db.executemany(sql, [make(i) for i in range(lo, min(lo + 100_000, count))])
        db.execute("ANALYZE")
        # A file at rest: the WAL folded in and truncated, as the cleanup pass leaves it.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return time.perf_counter() - started
