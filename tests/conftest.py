"""Shared fixtures: real Postgres and Redis, the suite parametrized over Postgres and SQLite.

`make test` runs the suite on pytest-xdist workers. Each worker is its own pytest session, so
every session fixture here is per worker: its own migrated Postgres database (named after the
worker), its own SQLite files (pytest's per-worker tmp dir), its own Redis key prefix, its own
peers on free ports. Nothing is shared between workers but the servers themselves.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from stateless.config import Settings
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import build_engine, build_sessionmaker, session_scope
from stateless.main import create_app
from stateless.migrations.runner import upgrade
from stateless.tenants.service import ConfigureRequest, TenantService
from tests.services import (
    Services,
    ServiceUnavailableError,
    asyncpg_url,
    discover,
    unique_name,
)

TEST_SECRET_KEY = "test-secret-key-with-more-than-32-characters!!"
TEST_AFFILIATE_SALT = "test-affiliate-salt-more-than-32-characters!!"
# "gw0", "gw1", ... under pytest-xdist; "main" when pytest runs in one process.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


# Files whose tests take tens of seconds each (a whole fault-injection run, a replayed Docker
# build, a browser on /docs, the README session, real servers stopped with signals). Under xdist
# they go first, so no worker is left running one of them alone at the end of the run.
SLOW_FIRST = (
    "tests/ops/test_faults.py",
    "tests/ops/test_dockerfile_replay.py",
    "tests/test_docs_pages.py",
    "tests/test_readme.py",
    "tests/ops/test_graceful_shutdown.py",
    "tests/ops/test_workflows.py",
    "tests/test_cli_guidance.py",
)


@pytest.hookimpl(trylast=True)  # after pytest's own grouping by session fixtures
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if WORKER != "main":
        items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FIRST))


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    try:
        found = discover()
    except (ServiceUnavailableError, OSError) as exc:
        pytest.exit(f"cannot run the suite: {exc}", returncode=3)
    yield found
    found.close()


def base_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "secret_key": TEST_SECRET_KEY,
        "affiliate_salt": TEST_AFFILIATE_SALT,
        "redis_url": None,
        "run_background_jobs": False,
        "cleanup_interval_seconds": 3600,
        "log_format": "console",
        "redis_key_prefix": unique_name(f"t_{WORKER}"),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
async def postgres_database(services: Services) -> AsyncIterator[str]:
    """A fresh, migrated database on the real Postgres server (one per xdist worker), dropped
    after the run."""
    name = unique_name(f"stateless_test_{WORKER}")
    conn = await asyncpg.connect(services.postgres_admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = asyncpg_url(services.postgres_admin_url, name)
    await asyncio.to_thread(upgrade, base_settings(url))
    yield url
    conn = await asyncpg.connect(services.postgres_admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("sqlite")
    url = f"sqlite+aiosqlite:///{directory / 'stateless.db'}"
    await asyncio.to_thread(upgrade, base_settings(url))
    return url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every test that touches the database runs once on SQLite and once on Postgres."""
    return str(request.getfixturevalue(f"{request.param}_database"))


def _reset_script() -> str:
    """One round trip that empties every table, children first (foreign keys).

    DELETE, not TRUNCATE: on the few rows a test leaves, DELETE is a cheap in-place operation,
    while TRUNCATE swaps every table's files, which is what made per-test isolation slow.
    """
    from stateless.models import Base

    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    return "".join(f"DELETE FROM {table};" for table in tables)


class DatabaseReset:
    """Empties one test database after each test in one multi-statement round trip (on
    Postgres over one connection kept for the whole run), instead of a fresh engine per test.

    Why not a per-test rollback: the app under test commits through its own pool, and so do the
    CLI and `stateless serve` subprocesses, the uvicorn servers the browser tests start and the
    tests that need several real connections at once (advisory locks, SKIP LOCKED, a statement
    stuck behind a lock). Binding all of them to one connection inside an outer transaction
    would stop them seeing each other's commits; one DELETE round trip costs about the same.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._pg: asyncpg.Connection | None = None

    async def __call__(self) -> None:
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite":
            # A plain connection per reset (opening a local file is cheap): one kept open for the
            # whole run would outlive the CLI subprocesses some tests start on the same file.
            lite = sqlite3.connect(url.database or "", timeout=30, isolation_level=None)
            try:
                lite.execute("PRAGMA foreign_keys=ON")
                lite.executescript("BEGIN;" + _reset_script() + "COMMIT;")
            finally:
                lite.close()
            return
        if self._pg is None:
            self._pg = await asyncpg.connect(
                url.set(drivername="postgresql").render_as_string(hide_password=False),
                ssl=False,
            )
        await self._pg.execute("BEGIN;" + _reset_script() + "COMMIT;")

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()


class DatabaseResets:
    """One `DatabaseReset` per database URL, kept for the run.

    Keyed by the URL each test's `settings` carries rather than cached per `database_url`
    fixture value: folders that pin the database (tests/postgres, tests/sqlite) override
    `database_url`, and a session-cached reset built for the other database would then empty
    the wrong one whenever test order interleaves them (as xdist's scheduling does).
    """

    def __init__(self) -> None:
        self._resets: dict[str, DatabaseReset] = {}

    async def __call__(self, database_url: str) -> None:
        reset = self._resets.get(database_url)
        if reset is None:
            reset = self._resets[database_url] = DatabaseReset(database_url)
        await reset()

    async def close(self) -> None:
        for reset in self._resets.values():
            await reset.close()


@pytest.fixture(scope="session")
async def database_resets() -> AsyncIterator[DatabaseResets]:
    resets = DatabaseResets()
    yield resets
    await resets.close()


class SettingsTemplates:
    """Each database's test settings, read once per run; a test gets a copy with its own
    storage folder and Redis prefix (reading the environment into Settings costs ~9 ms)."""

    def __init__(self) -> None:
        self._templates: dict[str, Settings] = {}

    def for_test(self, database_url: str, tmp_path: Path) -> Settings:
        template = self._templates.get(database_url)
        if template is None:
            template = self._templates[database_url] = base_settings(database_url)
        return template.model_copy(
            update={
                "storage_local_path": tmp_path / "storage",
                "redis_key_prefix": unique_name(f"t_{WORKER}"),
            }
        )


@pytest.fixture(scope="session")
def settings_templates() -> SettingsTemplates:
    return SettingsTemplates()


@pytest.fixture
async def settings(
    database_url: str,
    tmp_path: Path,
    database_resets: DatabaseResets,
    settings_templates: SettingsTemplates,
) -> AsyncIterator[Settings]:
    yield settings_templates.for_test(database_url, tmp_path)
    await database_resets(database_url)


class Client(httpx.AsyncClient):
    app: Any


ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client(settings: Settings) -> AsyncIterator[ClientFactory]:
    """Build an app with `create_app(settings)`, run its lifespan, and talk to it over ASGI."""
    stack = AsyncExitStack()

    async def factory(base: Settings | None = None, **overrides: Any) -> Client:
        current = base or settings
        app_settings = current.model_copy(update=overrides) if overrides else current
        app = create_app(app_settings)
        manager = await stack.enter_async_context(
            LifespanManager(app, startup_timeout=30, shutdown_timeout=30)
        )
        client = Client(
            transport=httpx.ASGITransport(app=manager.app, raise_app_exceptions=False),
            base_url="http://testserver",
        )
        await stack.enter_async_context(client)
        client.app = app
        return client

    yield factory
    await stack.aclose()


@pytest.fixture
async def client(make_client: ClientFactory) -> Client:
    return await make_client()


@dataclass
class TenantHandle:
    app_id: str
    publishable_key: str
    secret_key: str

    def headers(self, kind: str = "sk") -> dict[str, str]:
        key = self.secret_key if kind == "sk" else self.publishable_key
        return {"X-App-ID": self.app_id, "Authorization": f"Bearer {key}"}

    @property
    def sk(self) -> dict[str, str]:
        return self.headers("sk")

    @property
    def pk(self) -> dict[str, str]:
        return self.headers("pk")


TenantFactory = Callable[..., Awaitable[TenantHandle]]


async def run_tenant_service(
    settings: Settings, action: Callable[[TenantService], Awaitable[Any]]
) -> Any:
    engine = build_engine(settings)
    try:
        async with session_scope(build_sessionmaker(engine)) as session:
            return await action(TenantService(session, PrivacyKit(settings.secret_key)))
    finally:
        await engine.dispose()


class TenantEngines:
    """Where tests register tenants: on Postgres one engine per database for the whole run.

    A fresh engine per tenant reconnected and recompiled every statement (its compiled cache is
    per engine): about 45 ms a tenant, on most tests. SQLite keeps a fresh engine per call, so
    no connection of ours outlives it beside the CLI subprocesses that open the same file.
    """

    def __init__(self) -> None:
        self._engines: dict[str, AsyncEngine] = {}

    async def run(
        self, settings: Settings, action: Callable[[TenantService], Awaitable[Any]]
    ) -> Any:
        if settings.is_sqlite:
            return await run_tenant_service(settings, action)
        engine = self._engines.get(settings.database_url)
        if engine is None:
            engine = self._engines[settings.database_url] = build_engine(settings)
        async with session_scope(build_sessionmaker(engine)) as session:
            return await action(TenantService(session, PrivacyKit(settings.secret_key)))

    async def close(self) -> None:
        for engine in self._engines.values():
            await engine.dispose()


@pytest.fixture(scope="session")
async def tenant_engines() -> AsyncIterator[TenantEngines]:
    engines = TenantEngines()
    yield engines
    await engines.close()


@pytest.fixture
def make_tenant(settings: Settings, tenant_engines: TenantEngines) -> TenantFactory:
    """Register a tenant the way the CLI does (same service), optionally configured."""

    async def factory(
        app_id: str = "app-a", base: Settings | None = None, **config: Any
    ) -> TenantHandle:
        current = base or settings

        async def action(service: TenantService) -> Any:
            keys = await service.create(app_id)
            if config:
                await service.configure(app_id, ConfigureRequest(**config))
            return keys

        keys = await tenant_engines.run(current, action)
        return TenantHandle(keys.app_id, keys.publishable_key, keys.secret_key)

    return factory


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> TenantHandle:
    return await make_tenant("app-a")


@pytest.fixture
async def other_tenant(make_tenant: TenantFactory) -> TenantHandle:
    return await make_tenant("app-b")
