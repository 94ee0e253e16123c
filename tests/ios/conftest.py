"""iOS fixtures: an APNs key pair, local APNs peers (production and sandbox), a configured app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stateless.kit.data.db import build_engine
from tests.conftest import Client, ClientFactory, TenantFactory, TenantHandle
from tests.peers.apns import ApnsPeer

TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
BUNDLE_ID = "com.example.app"
HIGH_LIMITS = ["ios.register_token=100000/minute", "ios.push=100000/minute"]


@dataclass(frozen=True)
class ApnsKey:
    private_pem: str
    public_pem: bytes


def new_apns_key() -> ApnsKey:
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ApnsKey(private_pem, public_pem)


@pytest.fixture(scope="session")
def apns_key() -> ApnsKey:
    return new_apns_key()


def make_peer(apns_key: ApnsKey) -> ApnsPeer:
    peer = ApnsPeer()
    peer.add_key(KEY_ID, TEAM_ID, apns_key.public_pem, {BUNDLE_ID, "com.example.other"})
    return peer


@pytest.fixture
async def apns_peer(apns_key: ApnsKey, tmp_path: Path) -> AsyncIterator[ApnsPeer]:
    async with make_peer(apns_key).running(tmp_path / "apns-production") as peer:
        yield peer


@pytest.fixture
async def sandbox_peer(apns_key: ApnsKey, tmp_path: Path) -> AsyncIterator[ApnsPeer]:
    async with make_peer(apns_key).running(tmp_path / "apns-sandbox") as peer:
        yield peer


@pytest.fixture
async def ios_client(
    apns_peer: ApnsPeer, sandbox_peer: ApnsPeer, make_client: ClientFactory
) -> Client:
    """The app, with APNs pointed at the local peers and trusting only the peers' test CA.

    The peers come first so they outlive the app (its APNs connections close before them).
    """
    assert apns_peer.ca_file is not None
    # Both peers' CAs in one bundle, as an operator's custom trust file would be.
    bundle = apns_peer.ca_file.parent.parent / "apns-trust.pem"
    assert sandbox_peer.ca_file is not None
    bundle.write_bytes(apns_peer.ca_file.read_bytes() + sandbox_peer.ca_file.read_bytes())
    return await make_client(
        apns_production_url=apns_peer.url,
        apns_sandbox_url=sandbox_peer.url,
        apns_ca_file=bundle,
    )


@pytest.fixture
async def ios_tenant(make_tenant: TenantFactory, apns_key: ApnsKey) -> TenantHandle:
    return await make_tenant(
        "app-a",
        bundle_id=BUNDLE_ID,
        apns_team_id=TEAM_ID,
        apns_key_id=KEY_ID,
        apns_key_p8=apns_key.private_pem,
        rate_limits=HIGH_LIMITS,
    )


def hex_token(i: int, prefix: str = "a") -> str:
    """A distinct, valid 64-hex-character device token."""
    return (prefix + f"{i:08x}" * 8)[:64]


async def sql(client: Client, statement: str, **params: object) -> list[tuple[object, ...]]:
    """Look at (or change) the database directly, beside the app, as an operator could."""
    from sqlalchemy import text

    engine = build_engine(client.app.state.container.settings)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()
