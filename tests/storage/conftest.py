"""Storage fixtures: every storage test runs on the local backend and on S3 (moto's server)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from stateless.config import Settings
from tests.conftest import Client, ClientFactory
from tests.peers.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Peer, running_s3
from tests.support import sql

S3_PREFIX = "stateless"


@pytest.fixture(scope="session")
def s3_peer() -> Iterator[S3Peer]:
    with running_s3() as peer:
        yield peer


@dataclass
class Storage:
    """The app under test plus a way to look at the bodies where they really live."""

    kind: str
    client: Client
    settings: Settings
    peer: S3Peer | None = None
    bucket: str | None = None

    def bodies(self) -> list[str]:
        """Keys of every body stored (S3: listed from the bucket; local: files on disk)."""
        if self.kind == "s3":
            assert self.peer is not None and self.bucket is not None
            return self.peer.keys(self.bucket)
        root = Path(self.settings.storage_local_path)
        if not root.exists():
            return []
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def body(self, storage_key: str) -> bytes | None:
        if self.kind == "s3":
            assert self.peer is not None and self.bucket is not None
            return self.peer.get(self.bucket, f"{S3_PREFIX}/{storage_key}")
        path = Path(self.settings.storage_local_path) / storage_key
        return path.read_bytes() if path.is_file() else None

    async def storage_key(self, object_id: str) -> str:
        rows = await sql(
            self.settings, "SELECT storage_key FROM stored_files WHERE object_id = :i", i=object_id
        )
        assert rows, "no row for this object"
        return str(rows[0][0])

    async def transfer(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        """Follow a returned URL with no API key: the app's own URLs over ASGI, S3 over HTTP."""
        if url.startswith("http://testserver/"):
            return await self.client.request(method, url, **kwargs)  # type: ignore[arg-type]
        async with httpx.AsyncClient() as plain:
            return await plain.request(method, url, **kwargs)  # type: ignore[arg-type]


async def _s3_storage(peer: S3Peer, make_client: ClientFactory) -> Storage:
    bucket = peer.create_bucket()
    client = await make_client(
        s3_bucket_name=bucket,
        s3_endpoint_url=peer.endpoint,
        s3_key_prefix=S3_PREFIX,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        aws_region=REGION,
    )
    return Storage("s3", client, client.app.state.container.settings, peer, bucket)


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, make_client: ClientFactory) -> Storage:
    if request.param == "local":
        client = await make_client()
        return Storage("local", client, client.app.state.container.settings)
    return await _s3_storage(request.getfixturevalue("s3_peer"), make_client)


@pytest.fixture
async def local(make_client: ClientFactory) -> Storage:
    """Only the local backend: signature and expiry of URLs are checked by this API itself."""
    client = await make_client()
    return Storage("local", client, client.app.state.container.settings)


@pytest.fixture
async def s3(s3_peer: S3Peer, make_client: ClientFactory) -> Storage:
    """Only S3 (moto's server)."""
    return await _s3_storage(s3_peer, make_client)
