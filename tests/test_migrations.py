"""Migrations upgrade and downgrade on both databases, and leave the schema the models expect."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from stateless.migrations.runner import downgrade, upgrade
from stateless.models import Base
from tests.conftest import base_settings
from tests.services import Services, asyncpg_url, unique_name


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _round_trip(url: str) -> None:
    settings = base_settings(url)
    await asyncio.to_thread(upgrade, settings)
    expected = {t.name for t in Base.metadata.sorted_tables}
    assert expected <= await _tables(url)
    await asyncio.to_thread(downgrade, settings, "base")
    assert not expected & await _tables(url)
    await asyncio.to_thread(upgrade, settings)
    assert expected <= await _tables(url)


async def test_sqlite_upgrade_downgrade_upgrade(tmp_path) -> None:
    await _round_trip(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")


async def test_postgres_upgrade_downgrade_upgrade(services: Services) -> None:
    name = unique_name("stateless_mig")
    conn = await asyncpg.connect(services.postgres_admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        await _round_trip(asyncpg_url(services.postgres_admin_url, name))
    finally:
        conn = await asyncpg.connect(services.postgres_admin_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": False}
    )
    return list(compare_metadata(context, Base.metadata))


async def test_models_and_migrations_do_not_drift(database_url: str) -> None:
    """What `alembic check` does: the migrated schema, on each database, is what the models
    declare (tables, columns and their types, indexes, unique and foreign keys). A model change
    without its migration fails here instead of in production."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            drift = await conn.run_sync(_drift)
    finally:
        await engine.dispose()
    assert drift == []
