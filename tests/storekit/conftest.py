"""StoreKit fixtures: test signing CAs (trusted only through APPLE_ROOT_CERTS_DIR), a local
verifyReceipt peer, and an app configured with a bundle id, Apple id and shared secret."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from stateless.config import Settings
from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.peers.apple_ca import TestAppleCA
from tests.peers.verify_receipt import VerifyReceiptPeer, running_peer

BUNDLE_ID = "com.example.app"
APP_APPLE_ID = 1234567890
SHARED_SECRET = "shared-secret-3f9a1c0e5b7d4e2a9c8b"


@dataclass
class TestPKI:
    __test__ = False

    trusted: TestAppleCA
    no_leaf_oid: TestAppleCA
    no_intermediate_oid: TestAppleCA
    rogue: TestAppleCA  # a well-formed chain whose root nobody trusts


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(
        trusted=TestAppleCA(),
        no_leaf_oid=TestAppleCA(name="Test Root Without Leaf OID", leaf_oid=False),
        no_intermediate_oid=TestAppleCA(
            name="Test Root Without Intermediate OID", intermediate_oid=False
        ),
        rogue=TestAppleCA(name="Rogue Root"),
    )


@pytest.fixture(scope="session")
def roots_dir(pki: TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("apple-roots")
    for index, ca in enumerate((pki.trusted, pki.no_leaf_oid, pki.no_intermediate_oid)):
        (directory / f"root-{index}.pem").write_bytes(ca.root_pem())
    return directory


@pytest.fixture
def peer() -> Iterator[VerifyReceiptPeer]:
    with running_peer(SHARED_SECRET) as running:
        yield running


@pytest.fixture
async def sk_client(make_client: ClientFactory, roots_dir: Path, peer: VerifyReceiptPeer) -> Client:
    return await make_client(
        apple_root_certs_dir=roots_dir,
        apple_verify_receipt_url=peer.production_url,
        apple_verify_receipt_sandbox_url=peer.sandbox_url,
        apple_verify_receipt_timeout_seconds=5.0,
    )


@pytest.fixture
async def app(make_tenant: TenantFactory) -> TenantHandle:
    return await make_tenant(
        "app-a",
        bundle_id=BUNDLE_ID,
        app_apple_id=APP_APPLE_ID,
        appstore_shared_secret=SHARED_SECRET,
    )


async def count_rows(settings: Settings, table: str) -> int:
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(f"SELECT count(*) FROM {table}"))
            return int(result.scalar_one())
    finally:
        await engine.dispose()
