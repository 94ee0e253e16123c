"""After cleanup, erased content is not readable anywhere in SQLite's files (secure_delete + WAL
checkpoint), which is what a user of the embedded default keeps on disk."""

from __future__ import annotations

import secrets

from stateless.config import Settings
from tests.conftest import Client, TenantHandle
from tests.privacy import sqlite_file_bytes
from tests.support import expire_rows, sql

DRAFTS = "/api/v1/drafts"


async def test_sqlite_erasure_leaves_no_trace_in_the_files(
    client: Client, tenant: TenantHandle, settings: Settings
) -> None:
    marker = "ERASE-ME-" + secrets.token_hex(8)
    created = await client.post(DRAFTS, headers=tenant.pk, json={"content": marker})
    sealed = (
        await sql(
            settings,
            "SELECT content_sealed FROM drafts WHERE draft_id = :d",
            d=created.json()["id"],
        )
    )[0][0]
    assert sealed.encode() in sqlite_file_bytes(settings.database_url)
    await expire_rows(settings, "drafts")
    await client.post("/api/v1/admin/cleanup", headers=tenant.sk)
    on_disk = sqlite_file_bytes(settings.database_url)
    assert sealed.encode() not in on_disk
    assert sealed[:40].encode() not in on_disk
    assert marker.encode() not in on_disk
