"""The floor: the least work each database endpoint must do, as a bare FastAPI app.

Per request it parses the same body with the same schema, runs the same crypto (keyed hash,
AES-GCM seal with the same `PrivacyKit`) and exactly the statements our endpoint runs, on the raw
driver: an asyncpg pool sized like ours (Postgres) or one aiosqlite connection with our pragmas,
secure_delete included (SQLite). No ORM, no middleware, no auth, no rate limit, no log line.
`ours / floor` is then the price of everything our request path adds on top of the work.

Configured by environment: FLOOR_DATABASE_URL (postgresql://... or sqlite:///path),
SECRET_KEY (the same as ours, so rows are interchangeable), FLOOR_APP_ID, FLOOR_POOL_SIZE.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import asyncpg
from fastapi import FastAPI, HTTPException

from stateless.bots.schemas import ExecuteIn
from stateless.drafts.schemas import DraftIn
from stateless.ios.schemas import RegisterTokenIn
from stateless.kit.crypto.sealing import PrivacyKit

DEVICE_TTL = timedelta(days=30)
DRAFT_TTL = timedelta(hours=24)
TASK_TTL = timedelta(hours=48)

PG = {
    "register": (
        "INSERT INTO ios_device_tokens (app_id, device_hash, token_sealed, environment, topic,"
        " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (app_id, device_hash) DO UPDATE SET token_sealed = excluded.token_sealed,"
        " environment = excluded.environment, topic = excluded.topic,"
        " created_at = excluded.created_at, expires_at = excluded.expires_at"
    ),
    "draft_read": (
        "SELECT content_sealed, size_bytes, created_at, expires_at FROM drafts"
        " WHERE app_id = $1 AND expires_at > $2 AND draft_id = $3 LIMIT 1"
    ),
    "draft_create": (
        "INSERT INTO drafts (app_id, draft_id, content_sealed, size_bytes, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
    ),
    "entitlement_check": (
        "SELECT product_id, parent_product_id, state, period_ends_at, grace_ends_at, store,"
        " environment, will_renew, period_type, purchased_at FROM entitlement_sources"
        " WHERE app_id = $1 AND expires_at > $2 AND subject_hash = $3"
    ),
    "task_insert": (
        "INSERT INTO bot_tasks (app_id, task_id, task_type, mode, status, context_sealed,"
        " base_url, attempts, next_attempt_at, created_at, expires_at)"
        " VALUES ($1, $2, $3, 'async', 'queued', $4, $5, 0, $6, $7, $8)"
    ),
}
# The same statements with SQLite's placeholders.
LITE = {name: sql for name, sql in PG.items()}
for _name, _sql in PG.items():
    for _n in range(8, 0, -1):
        _sql = _sql.replace(f"${_n}", "?")
    LITE[_name] = _sql


def _lite_time(value: datetime) -> str:
    """SQLite keeps naive UTC text in SQLAlchemy's format, exactly as our UTCDateTime does."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class PostgresFloor:
    def __init__(self, url: str, size: int) -> None:
        self.url, self.size = url, size
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        # Same size as ours, no TLS attempt (like ours on a loopback host), opened up front.
        self.pool = await asyncpg.create_pool(
            self.url,
            min_size=self.size,
            max_size=self.size,
            ssl=False,
            server_settings={"application_name": "floor"},
        )

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def execute(self, name: str, *args: Any) -> None:
        assert self.pool is not None
        await self.pool.execute(PG[name], *args)

    async def fetchrow(self, name: str, *args: Any) -> tuple[Any, ...] | None:
        assert self.pool is not None
        row = await self.pool.fetchrow(PG[name], *args)
        return tuple(row) if row is not None else None

    def time(self, value: datetime) -> Any:
        return value


class SqliteFloor:
    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        # Autocommit: a single statement is its own transaction, no BEGIN/COMMIT around it.
        self.conn = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            "secure_delete=ON",
            "busy_timeout=5000",
            "synchronous=NORMAL",
        ):
            await self.conn.execute(f"PRAGMA {pragma}")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def execute(self, name: str, *args: Any) -> None:
        assert self.conn is not None
        await self.conn.execute(LITE[name], args)

    async def fetchrow(self, name: str, *args: Any) -> tuple[Any, ...] | None:
        assert self.conn is not None
        async with self.conn.execute(LITE[name], args) as cursor:
            row = await cursor.fetchone()
        return tuple(row) if row is not None else None

    def time(self, value: datetime) -> Any:
        return _lite_time(value)


def create_floor(url: str, secret_key: str, app_id: str, pool_size: int) -> FastAPI:
    db: PostgresFloor | SqliteFloor = (
        SqliteFloor(url.split("///", 1)[1])
        if url.startswith("sqlite")
        else PostgresFloor(url, pool_size)
    )
    kit = PrivacyKit(secret_key)
    wake = asyncio.Event()  # stands in for our in-process worker wake-up after a queued task

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await db.open()
        yield
        await db.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/v1/ios/register-token")
    async def register(body: RegisterTokenIn) -> dict[str, str]:
        now = datetime.now(UTC)
        expires_at = now + DEVICE_TTL
        await db.execute(
            "register",
            app_id,
            kit.keyed_hash("ios-device-id", app_id, body.device_id),
            kit.encrypt_text("apns-token", app_id, body.token),
            body.environment,
            body.topic,
            db.time(now),
            db.time(expires_at),
        )
        return {"status": "registered", "tenant": app_id, "expires_at": _iso(expires_at)}

    @app.get("/api/v1/drafts/{draft_id}")
    async def read_draft(draft_id: str) -> dict[str, Any]:
        row = await db.fetchrow("draft_read", app_id, db.time(datetime.now(UTC)), draft_id)
        if row is None:
            raise HTTPException(404)
        content = kit.decrypt("draft-content", app_id, row[0]).decode()
        return {
            "id": draft_id,
            "content": content,
            "size_bytes": row[1],
            "created_at": str(row[2]),
            "expires_at": str(row[3]),
            "tenant": app_id,
        }

    @app.post("/api/v1/entitlements/check")
    async def entitlement_check(body: dict[str, str]) -> dict[str, Any]:
        """The same keyed-hash lookup as /check, on the raw driver."""
        now = datetime.now(UTC)
        token = str(uuid.UUID(body["app_account_token"]))
        subject = kit.keyed_hash("entitlement-subject", app_id, token)
        row = await db.fetchrow("entitlement_check", app_id, db.time(now), subject)
        active = row is not None and row[2] in ("active", "cancelled", "grace")
        return {
            "entitlements": {
                "pro": {
                    "is_active": active,
                    "expires_at": None if row is None else str(row[3]),
                    "grace_period_expires_at": None,
                    "product_id": None if row is None else row[0],
                    "store": None if row is None else row[5],
                    "will_renew": False,
                    "period_type": None,
                    "purchased_at": None,
                    "environment": None,
                }
            },
            "checked_at": _iso(now),
        }

    @app.post("/api/v1/drafts", status_code=201)
    async def create_draft(body: DraftIn) -> dict[str, Any]:
        now = datetime.now(UTC)
        expires_at = now + DRAFT_TTL
        raw = body.content.encode()
        draft_id = secrets.token_hex(16)
        await db.execute(
            "draft_create",
            app_id,
            draft_id,
            kit.encrypt("draft-content", app_id, raw),
            len(raw),
            db.time(now),
            db.time(expires_at),
        )
        return {
            "id": draft_id,
            "content": body.content,
            "size_bytes": len(raw),
            "created_at": _iso(now),
            "expires_at": _iso(expires_at),
            "tenant": app_id,
        }

    @app.post("/api/v1/bots/execute", status_code=202)
    async def execute(body: ExecuteIn) -> dict[str, Any]:
        now = datetime.now(UTC)
        expires_at = now + TASK_TTL
        task_id = secrets.token_hex(16)
        await db.execute(
            "task_insert",
            app_id,
            task_id,
            body.task_type,
            kit.encrypt_text("bot-context", app_id, str(body.context)),
            "http://127.0.0.1",
            db.time(now),
            db.time(now),
            db.time(expires_at),
        )
        wake.set()
        return {
            "status": "queued",
            "task_id": task_id,
            "task_type": body.task_type,
            "tenant": app_id,
            "expires_at": _iso(expires_at),
        }

    return app


def app() -> FastAPI:
    """uvicorn --factory bench.floor_app:app"""
    return create_floor(
        os.environ["FLOOR_DATABASE_URL"],
        os.environ["SECRET_KEY"],
        os.environ.get("FLOOR_APP_ID", "bench"),
        int(os.environ.get("FLOOR_POOL_SIZE", "20")),
    )
