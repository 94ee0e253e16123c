"""The reusable privacy assertion: dump the database (pg_dump / SQLite files and dump) and the
captured logs, and assert none of a list of plaintext values appears anywhere in them."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from stateless.config import Settings


def _sqlite_path(database_url: str) -> Path:
    return Path(make_url(database_url).database or "")


def sqlite_file_bytes(database_url: str) -> bytes:
    """The raw bytes of the SQLite database and its WAL/SHM files: what is on disk, really."""
    path = _sqlite_path(database_url)
    blob = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        candidate = Path(str(path) + suffix)
        if candidate.exists():
            blob += candidate.read_bytes()
    return blob


async def dump_database(database_url: str) -> str:
    if database_url.startswith("sqlite"):
        path = _sqlite_path(database_url)

        def logical_dump() -> str:
            conn = sqlite3.connect(path)
            try:
                return "\n".join(conn.iterdump())
            finally:
                conn.close()

        text = await asyncio.to_thread(logical_dump)
        return text + "\n" + sqlite_file_bytes(database_url).decode("latin-1")
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise AssertionError("pg_dump is needed for the privacy assertion on Postgres")
    libpq = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    proc = await asyncio.create_subprocess_exec(
        pg_dump,
        "--no-owner",
        "--data-only",
        libpq,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"pg_dump failed: {err.decode(errors='replace')[:500]}")
    return out.decode("utf-8", errors="replace")


def assert_absent(haystack: str, values: list[str], where: str) -> None:
    lowered = haystack.lower()
    leaked = [v for v in values if v and v.lower() in lowered]
    assert not leaked, f"plaintext found in {where}: {leaked}"


async def assert_not_stored(settings: Settings, values: list[str], logs: str | None = None) -> str:
    """Assert no value is in the database dump or the logs; returns the dump for more checks.

    When logs are given they must not be empty: an empty capture would prove nothing."""
    assert values, "give the privacy assertion something to look for"
    dump = await dump_database(settings.database_url)
    assert_absent(dump, values, "the database dump")
    if logs is not None:
        assert logs.strip(), "no log lines were captured; the log check would prove nothing"
        assert_absent(logs, values, "the logs")
    return dump
