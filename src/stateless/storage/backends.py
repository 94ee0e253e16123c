"""Where file bodies live: one small async interface, an S3-compatible store and a local folder.

S3 goes through obstore (Rust object_store: async, streaming, presigning, no blocking SDK on the
event loop). The local folder uses plain file calls in worker threads; its "presigned" URLs are
HMAC-signed, expiring URLs of this API (PUT /storage/uploads/{token}, GET /storage/downloads/...).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import obstore
from obstore.store import S3Store

from stateless.config import Settings
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import utcnow
from stateless.kit.web.errors import Forbidden, NotFound, PayloadTooLarge, Unprocessable

API_STORAGE = "/api/v1/storage"
# SigV4 presigned URLs cannot outlive 7 days; our local URLs follow the same cap.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
URL_PURPOSE = "storage-url"
_KEY = re.compile(r"^([A-Za-z0-9_-]{1,64})/([A-Za-z0-9_-]{1,64})$")
# What a listing may return locally (temp files of interrupted uploads start with a dot).
_LISTED_KEY = re.compile(r"^([A-Za-z0-9_-]{1,64})/([A-Za-z0-9_.-]{1,160})$")
_WRITE_CHUNK_BYTES = 1024 * 1024

Method = Literal["PUT", "GET"]


class ObjectNotFound(NotFound):
    code, title = "object_not_found", "Object not found"


class InvalidSignature(Forbidden):
    code = "invalid_signature"


class UrlExpired(Forbidden):
    code = "url_expired"


class UploadTooLarge(PayloadTooLarge):
    code = "upload_too_large"


class UploadIncomplete(Unprocessable):
    code = "upload_incomplete"


def new_storage_key(app_id: str) -> str:
    """A random key under the tenant's prefix; nothing the client sent takes part in it."""
    return f"{app_id}/{secrets.token_urlsafe(24)}"


def split_key(key: str) -> tuple[str, str] | None:
    match = _KEY.fullmatch(key)
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class UploadTarget:
    method: Method
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def _seconds_until(expires_at: datetime, now: datetime) -> int:
    """Whole seconds of validity for SigV4: rounded down so the URL dies with the object, but at
    least the 1 s S3 requires (an object with under a second left); never above the 7-day cap."""
    remaining = (expires_at - now).total_seconds()
    if remaining <= 0:
        raise ObjectNotFound("The object has expired")
    return min(max(1, int(remaining)), MAX_PRESIGN_SECONDS)


class StorageBackend(ABC):
    """The operations the storage service, the cleanup hook and the orphan sweep need."""

    name: str

    @abstractmethod
    async def put(self, key: str, data: bytes, *, content_type: str) -> None: ...

    @abstractmethod
    async def delete(self, keys: Sequence[str]) -> None:
        """Delete bodies; keys already gone are not an error."""

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    async def presign_put(
        self, key: str, *, content_type: str, expires_at: datetime, base_url: str
    ) -> UploadTarget: ...

    @abstractmethod
    async def presign_get(self, key: str, *, expires_at: datetime, base_url: str) -> str: ...

    @abstractmethod
    def list_objects(self) -> AsyncIterator[ObjectInfo]:
        """Every body this deployment holds (for the orphan sweep)."""

    async def close(self) -> None:
        return None


class S3Backend(StorageBackend):
    """Any S3-compatible service (AWS, MinIO, R2, Spaces) under one key prefix of one bucket."""

    name = "s3"

    def __init__(self, settings: Settings) -> None:
        assert settings.s3_bucket_name
        config: dict[str, object] = {"region": settings.aws_region}
        if settings.aws_access_key_id and settings.aws_secret_access_key:
            config["access_key_id"] = settings.aws_access_key_id
            config["secret_access_key"] = settings.aws_secret_access_key
        client_options: dict[str, object] = {"timeout": "120s", "connect_timeout": "5s"}
        if settings.s3_endpoint_url:
            config["endpoint"] = settings.s3_endpoint_url
            # MinIO and most self-hosted services want path-style requests.
            config["virtual_hosted_style_request"] = False
            if settings.s3_endpoint_url.startswith("http://"):
                client_options["allow_http"] = True
        self.store = S3Store(
            settings.s3_bucket_name,
            prefix=settings.s3_key_prefix.strip("/") or None,
            client_options=client_options,  # type: ignore[arg-type]
            **config,  # type: ignore[arg-type]
        )

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        await obstore.put_async(self.store, key, data, attributes={"Content-Type": content_type})

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await obstore.delete_async(self.store, list(keys))

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            result = await obstore.get_async(self.store, key, options={"head": True})
        except FileNotFoundError:
            return None
        meta = result.meta
        content_type = result.attributes.get("Content-Type")
        return ObjectInfo(
            key=key,
            size=int(meta["size"]),
            last_modified=meta["last_modified"],
            content_type=str(content_type) if content_type is not None else None,
        )

    async def presign_put(
        self, key: str, *, content_type: str, expires_at: datetime, base_url: str
    ) -> UploadTarget:
        # obstore signs method, key and expiry only (SignedHeaders=host): the declared length
        # and type are checked against the stored object before a download URL is issued.
        seconds = _seconds_until(expires_at, utcnow())
        url = await obstore.sign_async(self.store, "PUT", key, timedelta(seconds=seconds))
        return UploadTarget("PUT", url, {"Content-Type": content_type})

    async def presign_get(self, key: str, *, expires_at: datetime, base_url: str) -> str:
        seconds = _seconds_until(expires_at, utcnow())
        return await obstore.sign_async(self.store, "GET", key, timedelta(seconds=seconds))

    async def list_objects(self) -> AsyncIterator[ObjectInfo]:
        async for chunk in obstore.list(self.store, chunk_size=1000):
            for meta in chunk:
                yield ObjectInfo(
                    key=meta["path"], size=int(meta["size"]), last_modified=meta["last_modified"]
                )


@dataclass(frozen=True, slots=True)
class UrlGrant:
    """What a verified local URL allows: one method on one key of one tenant, until `expires`."""

    method: Method
    app_id: str
    key: str
    expires: int


class LocalBackend(StorageBackend):
    """A directory on this machine; bodies at <root>/<app_id>/<random>, written atomically."""

    name = "local"

    def __init__(self, root: Path, kit: PrivacyKit) -> None:
        self.root = root.resolve()
        self.kit = kit

    # -- paths -------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        """One file exactly two levels under the root; keys are ours, so anything else is a bug."""
        match = _LISTED_KEY.fullmatch(key)
        if match is None or match.group(2) in (".", ".."):
            raise ValueError("malformed storage key")
        return self.root / match.group(1) / match.group(2)

    def _temp_path(self, key: str) -> Path:
        final = self._path(key)
        return final.with_name(f".tmp-{final.name}-{secrets.token_hex(6)}")

    # -- signed URLs --------------------------------------------------------------------------
    def _signature(self, method: Method, app_id: str, name: str, expires: int) -> str:
        message = f"{method}\n{app_id}\n{name}\n{expires}"
        return self.kit.keyed_hash(URL_PURPOSE, app_id, message)

    def sign(self, method: Method, key: str, expires_at: datetime) -> str:
        parts = split_key(key)
        assert parts is not None
        app_id, name = parts
        expires = int(expires_at.timestamp())  # floor: never valid past expires_at
        signature = self._signature(method, app_id, name, expires)
        return f"{app_id}.{name}.{expires}.{signature}"

    def verify(self, token: str, method: Method, now: datetime | None = None) -> UrlGrant:
        """Check signature first, then expiry; both failures are a 403 problem."""
        pieces = token.split(".")
        if len(pieces) != 4 or split_key(f"{pieces[0]}/{pieces[1]}") is None:
            raise InvalidSignature("The URL signature is not valid")
        app_id, name, expires_text, signature = pieces
        if not expires_text.isdigit() or len(expires_text) > 12:
            raise InvalidSignature("The URL signature is not valid")
        expected = self._signature(method, app_id, name, int(expires_text))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise InvalidSignature("The URL signature is not valid")
        now = now or utcnow()
        if int(expires_text) <= now.timestamp():
            raise UrlExpired("The URL has expired")
        return UrlGrant(method, app_id, f"{app_id}/{name}", int(expires_text))

    async def presign_put(
        self, key: str, *, content_type: str, expires_at: datetime, base_url: str
    ) -> UploadTarget:
        token = self.sign("PUT", key, expires_at)
        url = f"{base_url.rstrip('/')}{API_STORAGE}/uploads/{token}"
        return UploadTarget("PUT", url, {"Content-Type": content_type})

    async def presign_get(self, key: str, *, expires_at: datetime, base_url: str) -> str:
        token = self.sign("GET", key, expires_at)
        return f"{base_url.rstrip('/')}{API_STORAGE}/downloads/{token}"

    # -- bodies -------------------------------------------------------------------------------
    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        async def one() -> AsyncIterator[bytes]:
            yield data

        await self.write_stream(key, one(), expected_length=len(data))

    async def write_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, expected_length: int
    ) -> int:
        """Stream to a temp file, then rename into place: readers never see a partial body.

        More bytes than declared: 413 at the first extra byte; fewer: 422. Either way the
        partial file is removed and nothing is kept.
        """
        final, temp = self._path(key), self._temp_path(key)
        fd = await asyncio.to_thread(_open_exclusive, temp)
        written = 0
        buffer = bytearray()
        # One write in flight while the next MiB arrives: disk and network overlap.
        pending: asyncio.Future[None] | None = None
        try:
            async for chunk in chunks:
                written += len(chunk)
                if written > expected_length:
                    raise UploadTooLarge(
                        f"The upload is larger than the declared {expected_length} bytes"
                    )
                buffer += chunk
                if len(buffer) >= _WRITE_CHUNK_BYTES:
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(asyncio.to_thread(_write_all, fd, buffer))
                    buffer = bytearray()
            if pending is not None:
                await pending
                pending = None
            if buffer:
                await asyncio.to_thread(_write_all, fd, buffer)
            if written != expected_length:
                raise UploadIncomplete(
                    f"The upload has {written} bytes, not the declared {expected_length}"
                )
            await asyncio.to_thread(os.close, fd)
            fd = -1
            await asyncio.to_thread(os.replace, temp, final)
        except BaseException:
            if pending is not None:  # never close the descriptor under a running write
                with contextlib.suppress(BaseException):
                    await asyncio.shield(pending)
            if fd >= 0:
                await asyncio.to_thread(os.close, fd)
            await asyncio.to_thread(_unlink_quietly, temp)
            raise
        return written

    async def stream(self, key: str, chunk_bytes: int = _WRITE_CHUNK_BYTES) -> AsyncIterator[bytes]:
        """Read in a worker thread, one chunk ahead of the one being sent."""
        handle = await asyncio.to_thread(open, self._path(key), "rb")
        ahead: asyncio.Future[bytes] | None = None
        try:
            ahead = asyncio.ensure_future(asyncio.to_thread(handle.read, chunk_bytes))
            while True:
                chunk = await ahead
                ahead = None
                if not chunk:
                    return
                ahead = asyncio.ensure_future(asyncio.to_thread(handle.read, chunk_bytes))
                yield chunk
        finally:
            if ahead is not None:  # never close the file under a running read
                with contextlib.suppress(BaseException):
                    await asyncio.shield(ahead)
            await asyncio.to_thread(handle.close)

    async def delete(self, keys: Sequence[str]) -> None:
        paths = [self._path(key) for key in keys]
        await asyncio.to_thread(_unlink_all, paths)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            stat = await asyncio.to_thread(os.stat, self._path(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))

    async def list_objects(self) -> AsyncIterator[ObjectInfo]:
        for info in await asyncio.to_thread(self._scan):
            yield info

    def _scan(self) -> list[ObjectInfo]:
        """Every file two levels down; temp files of crashed uploads are listed too (no row)."""
        found: list[ObjectInfo] = []
        if not self.root.is_dir():
            return found
        for tenant_dir in self.root.iterdir():
            if not tenant_dir.is_dir():
                continue
            for entry in os.scandir(tenant_dir):
                if entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    found.append(
                        ObjectInfo(
                            f"{tenant_dir.name}/{entry.name}",
                            stat.st_size,
                            datetime.fromtimestamp(stat.st_mtime, UTC),
                        )
                    )
        return found


def _unlink_all(paths: Sequence[Path]) -> None:
    for path in paths:
        _unlink_quietly(path)


def _open_exclusive(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def build_backend(settings: Settings, kit: PrivacyKit) -> StorageBackend:
    """S3 when S3_BUCKET_NAME is set, the local directory otherwise."""
    if settings.s3_bucket_name:
        return S3Backend(settings)
    return LocalBackend(settings.storage_local_path, kit)
