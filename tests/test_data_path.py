"""The request data path: lone writes under concurrency, scoped statements, tenant erasure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam
from sqlalchemy.engine import make_url

from stateless.config import Settings
from stateless.drafts.models import Draft
from stateless.drafts.repository import DraftRepository
from stateless.kit.data.db import (
    DeferredSession,
    build_engine,
    build_sessionmaker,
    postgres_connect_args,
    settle,
)
from stateless.kit.data.tenancy import TenantScopedRepository, scoped_select
from stateless.tenants.schemas import VerifiedAppId
from tests.conftest import Client, TenantFactory, TenantHandle, base_settings
from tests.support import count_rows

DRAFTS = "/api/v1/drafts"


async def test_concurrent_writes_all_land(client: Client, tenant: TenantHandle) -> None:
    """64 writers at once (SQLite queues them on its one writer): every one answers 201 and
    every row is stored, readable by its own id."""
    responses = await asyncio.gather(
        *(client.post(DRAFTS, headers=tenant.pk, json={"content": f"draft {i}"}) for i in range(64))
    )
    assert [r.status_code for r in responses] == [201] * 64, [r.text for r in responses[:3]]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 64
    reads = await asyncio.gather(
        *(client.get(f"{DRAFTS}/{draft_id}", headers=tenant.pk) for draft_id in ids)
    )
    assert sorted(r.json()["content"] for r in reads) == sorted(f"draft {i}" for i in range(64))


async def test_lone_write_inside_a_transaction_rolls_back_with_it(
    settings: Settings, make_tenant: TenantFactory
) -> None:
    """A scoped write joins an open transaction instead of committing on its own."""
    await make_tenant("app-a")
    engine = build_engine(settings)
    try:
        maker = build_sessionmaker(engine)
        async with maker() as session:
            await session.begin()
            repo = TenantScopedRepository.for_model(Draft)(session, VerifiedAppId("app-a"))
            draft = Draft(
                draft_id="d" * 32,
                content_sealed="x",
                size_bytes=1,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
            await DraftRepository(session, VerifiedAppId("app-a")).insert(draft)
            assert await repo.count() == 1  # visible inside the transaction
            await session.rollback()
        async with maker() as session:
            repo = TenantScopedRepository.for_model(Draft)(session, VerifiedAppId("app-a"))
            assert await repo.count() == 0
    finally:
        await engine.dispose()


async def test_scoped_statements_never_cross_tenants(
    settings: Settings, client: Client, make_tenant: TenantFactory
) -> None:
    a, b = await make_tenant("app-a"), await make_tenant("app-b")
    made = await client.post(DRAFTS, headers=a.pk, json={"content": "a's"})
    draft_id = made.json()["id"]
    by_id = scoped_select(Draft, Draft.__table__.c.draft_id == bindparam("draft_id"))
    engine = build_engine(settings)
    try:
        async with build_sessionmaker(engine)() as session:
            mine = TenantScopedRepository.for_model(Draft)(session, VerifiedAppId(a.app_id))
            theirs = TenantScopedRepository.for_model(Draft)(session, VerifiedAppId(b.app_id))
            assert await mine.run_row(by_id, {"draft_id": draft_id}) is not None
            assert await theirs.run_row(by_id, {"draft_id": draft_id}) is None
            # The scope parameters are the repository's: a caller's value is overwritten.
            forged = {"draft_id": draft_id, "scope_app_id": a.app_id}
            assert await theirs.run_row(by_id, forged) is None
            with pytest.raises(TypeError):
                await theirs.run_write(by_id, {"draft_id": draft_id})
            with pytest.raises(PermissionError):
                await theirs.erase_tenant(a.app_id)
    finally:
        await engine.dispose()
    assert (await client.get(f"{DRAFTS}/{draft_id}", headers=b.pk)).status_code == 404


async def test_erase_data_takes_only_the_callers_rows(
    settings: Settings, client: Client, make_tenant: TenantFactory
) -> None:
    a, b = await make_tenant("app-a"), await make_tenant("app-b")
    for handle in (a, b, a):
        r = await client.post(DRAFTS, headers=handle.pk, json={"content": "keep?"})
        assert r.status_code == 201
    erased = await client.delete("/api/v1/admin/data", headers=a.sk)
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["drafts"] == 2
    assert await count_rows(settings, "drafts", "app_id = :a", a="app-a") == 0
    assert await count_rows(settings, "drafts", "app_id = :b", b="app-b") == 1


@pytest.mark.parametrize(
    ("url", "tls_left_to_driver"),
    [
        ("postgresql+asyncpg://u@127.0.0.1/db", False),
        ("postgresql+asyncpg://u@localhost/db", False),
        ("postgresql+asyncpg://u@/db?host=/var/run/postgresql", False),
        ("postgresql+asyncpg://u@db.example.com/db", True),
        ("postgresql+asyncpg://u@127.0.0.1/db?ssl=require", True),
    ],
)
def test_no_tls_attempt_on_loopback_only(url: str, tls_left_to_driver: bool) -> None:
    args = postgres_connect_args(base_settings(url), make_url(url))
    assert ("ssl" not in args) is tls_left_to_driver


async def test_lone_statements_on_the_direct_path_keep_types_and_errors(
    settings: Settings, make_tenant: TenantFactory
) -> None:
    """Lone statements run as compiled plans on the raw driver (kit/data/direct.py on Postgres, the
    writer's sqlite3 connection on SQLite): rows come back typed like SQLAlchemy's (UTC-aware
    datetimes, attribute, index and mapping access), and a unique violation is the
    IntegrityError the app answers 409 for, without the statement's parameters."""
    from sqlalchemy.exc import IntegrityError

    from stateless.domains import open_container
    from stateless.drafts.repository import _BY_ID

    await make_tenant("app-a")
    expires_at = datetime.now(UTC).replace(microsecond=123456) + timedelta(hours=1)
    async with open_container(settings) as container:
        async with container.sessionmaker() as session:
            repo = DraftRepository(session, VerifiedAppId("app-a"))
            draft = Draft(
                draft_id="e" * 32, content_sealed="sealed-1", size_bytes=8, expires_at=expires_at
            )
            await repo.insert(draft)
            assert not session.in_transaction()  # it ran alone, in autocommit
            with pytest.raises(IntegrityError) as raised:
                await repo.insert(
                    Draft(
                        draft_id="e" * 32,
                        content_sealed="sealed-2",
                        size_bytes=8,
                        expires_at=expires_at,
                    )
                )
            assert "sealed-2" not in str(raised.value)
        async with container.read_sessionmaker() as session:
            repo = DraftRepository(session, VerifiedAppId("app-a"))
            row = await repo.run_row(_BY_ID, {"draft_id": "e" * 32})
            assert row is not None
            assert row.content_sealed == "sealed-1"
            assert row._mapping["size_bytes"] == 8
            assert row.expires_at == expires_at and row.expires_at.tzinfo is not None
            assert row.expires_at.utcoffset() == timedelta(0)
            other = DraftRepository(session, VerifiedAppId("app-b"))
            assert await other.run_row(_BY_ID, {"draft_id": "e" * 32}) is None


async def test_a_request_session_is_built_only_when_used(
    settings: Settings, make_tenant: TenantFactory
) -> None:
    """Lone statements run on the direct path without building the ORM session; anything
    else builds it and behaves as an AsyncSession does (a transaction that commits)."""
    await make_tenant("app-a")
    engine = build_engine(settings)
    try:
        maker = build_sessionmaker(engine)
        session = maker()
        assert isinstance(session, DeferredSession)
        repo = DraftRepository(session, VerifiedAppId("app-a"))
        draft = Draft(
            draft_id="e" * 32,
            content_sealed="x",
            size_bytes=1,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        await repo.insert(draft)  # a lone statement
        assert not session.started and not session.in_transaction()
        await settle(session, failed=False)
        assert not session.started

        session = maker()
        scoped = TenantScopedRepository.for_model(Draft)(session, VerifiedAppId("app-a"))
        assert await scoped.count() == 1  # an ORM query: the session is built and begins
        assert session.started and session.in_transaction()
        await settle(session, failed=False)
        assert not session.in_transaction()
    finally:
        await engine.dispose()
