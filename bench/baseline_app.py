"""The baseline: a bare FastAPI app that parses the same request bodies and returns the same
shapes as ours, with no middleware, auth, rate limits or database. `ours / baseline` is then
the price of everything the real service does on top of FastAPI itself."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field


class GenerateIn(BaseModel):
    code_id: str = Field(min_length=1, max_length=128)


class RegisterIn(BaseModel):
    token: str = Field(min_length=64, max_length=200, pattern="^[0-9a-fA-F]+$")
    device_id: str = Field(min_length=1, max_length=256)
    environment: str = "production"
    topic: str | None = None
    ttl_seconds: int | None = None


class ExecuteIn(BaseModel):
    task_type: str
    context: dict[str, Any]
    mode: str = "sync"
    ttl_seconds: int | None = None


def create_baseline() -> FastAPI:
    app = FastAPI()

    def expires(hours: int) -> str:
        return (datetime.now(UTC) + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "env": "production"}

    @app.post("/api/v1/affiliate/generate")
    async def generate(body: GenerateIn) -> dict[str, str]:
        return {"code": "ABCD-EFGH-JKMN-PQRS", "tenant": "bench"}

    @app.post("/api/v1/ios/register-token")
    async def register(body: RegisterIn) -> dict[str, str]:
        return {"status": "registered", "tenant": "bench", "expires_at": expires(720)}

    @app.post("/api/v1/bots/execute", status_code=202)
    async def execute(body: ExecuteIn) -> dict[str, Any]:
        return {
            "status": "queued",
            "task_id": secrets.token_hex(16),
            "task_type": body.task_type,
            "tenant": "bench",
            "ephemeral": True,
            "expires_at": expires(48),
        }

    @app.get("/api/v1/drafts/{draft_id}")
    async def read_draft(draft_id: str) -> dict[str, Any]:
        return {
            "id": draft_id,
            "content": "benchmark draft content",
            "size_bytes": 23,
            "created_at": expires(0),
            "expires_at": expires(24),
            "tenant": "bench",
        }

    return app


app = create_baseline()
