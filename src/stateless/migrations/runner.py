"""Programmatic Alembic: `stateless migrate`, tests and the bench all call this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from stateless.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    config.attributes["max_data_ttl_days"] = settings.max_data_ttl_days
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Upgrade, then re-sync the Postgres TTL guard with the current MAX_DATA_TTL_DAYS."""
    command.upgrade(alembic_config(settings), revision)
    if not settings.is_sqlite:
        import asyncio

        asyncio.run(_sync_ttl_guard(settings))


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
