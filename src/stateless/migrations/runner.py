"""Programmatic Alembic: `stateless migrate`, tests and the bench all call this.

Also what the CLI tells an operator about the database it opened: which one (`describe_database`),
whether it exists yet, and what an upgrade did (created, upgraded, or nothing to do).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from stateless.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    config.attributes["max_data_ttl_days"] = settings.max_data_ttl_days
    return config


@dataclass(frozen=True, slots=True)
class UpgradeOutcome:
    """The schema revision before and after `upgrade` (None: no schema at all)."""

    before: str | None
    after: str | None

    @property
    def created(self) -> bool:
        return self.before is None and self.after is not None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def sqlite_file(settings: Settings) -> Path | None:
    """The absolute path of a file-backed SQLite database, else None (Postgres, :memory:)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database or "").expanduser().resolve()


def describe_database(settings: Settings) -> str:
    """Which database this process opens, for people: a file path or a URL without password."""
    path = sqlite_file(settings)
    if path is not None:
        return f"SQLite file {path}"
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return "in-memory SQLite database"
    plain = url.set(drivername=url.get_backend_name())
    return f"{url.get_backend_name()} database {plain.render_as_string(hide_password=True)}"


def current_revision(settings: Settings) -> str | None:
    """The schema revision stamped in the database, None when there is no schema (or file)."""
    path = sqlite_file(settings)
    if path is not None and not path.exists():
        return None
    return asyncio.run(_read_revision(settings.database_url))


async def _read_revision(database_url: str) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    engine = create_async_engine(database_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(read)
    finally:
        await engine.dispose()


def upgrade(settings: Settings, revision: str = "head") -> UpgradeOutcome:
    """Upgrade, then re-sync the Postgres TTL guard with the current MAX_DATA_TTL_DAYS."""
    before = current_revision(settings)
    command.upgrade(alembic_config(settings), revision)
    if not settings.is_sqlite:
        asyncio.run(_sync_ttl_guard(settings))
    return UpgradeOutcome(before=before, after=current_revision(settings))


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)


async def _sync_ttl_guard(settings: Settings) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from stateless.migrations.helpers import ttl_guard_sql

    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            exists = (
                await conn.execute(text("SELECT to_regproc('stateless_max_data_ttl') IS NOT NULL"))
            ).scalar_one()
            if exists:
                await conn.execute(text(ttl_guard_sql(settings.max_data_ttl_days)))
    finally:
        await engine.dispose()
