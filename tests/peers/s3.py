"""A local S3: moto's server mode (real S3 REST protocol over HTTP) on 127.0.0.1 and a free port.

Moto stores objects and answers presigned URLs, but it does not verify SigV4 signatures or the
expiry of presigned URLs (real S3 does): tests of those refusals run against the local backend.
"""

from __future__ import annotations

import socket
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from moto.server import ThreadedMotoServer

ACCESS_KEY_ID = "test-access-key"
SECRET_ACCESS_KEY = "test-secret-access-key"
REGION = "us-east-1"
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class S3Peer:
    endpoint: str

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or f"stateless-{uuid.uuid4().hex[:12]}"
        httpx.put(f"{self.endpoint}/{bucket}").raise_for_status()
        return bucket

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in the bucket (ListObjectsV2), as S3 itself reports them."""
        response = httpx.get(
            f"{self.endpoint}/{bucket}", params={"list-type": "2", "prefix": prefix}
        )
        response.raise_for_status()
        root = ET.fromstring(response.content)
        return [el.text or "" for el in root.iter(f"{_NS}Key")]

    def get(self, bucket: str, key: str) -> bytes | None:
        """The stored bytes, read from the peer's own state (reads over HTTP need a signature)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        stored = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[bucket].keys.get(key)
        return bytes(stored.value) if stored is not None else None


@contextmanager
def running_s3() -> Iterator[S3Peer]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Peer(endpoint=f"http://127.0.0.1:{port}")
    finally:
        server.stop()
