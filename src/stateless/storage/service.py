"""Storage rules: declared size and type checked up front and against what arrived, keys random
and per tenant, URLs that never outlive the object, bodies deleted before their rows."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import session_scope, utcnow
from stateless.kit.web.errors import Conflict, NotFound, ProblemError, Unprocessable
from stateless.kit.wire.timestamps import whole_seconds
from stateless.lifecycle.policy import TtlPolicy
from stateless.storage.backends import (
    MAX_PRESIGN_SECONDS,
    LocalBackend,
    Method,
    ObjectNotFound,
    StorageBackend,
    UploadIncomplete,
    UploadTarget,
    UploadTooLarge,
    UrlGrant,
    new_storage_key,
)
from stateless.storage.models import STATUS_PENDING, STATUS_UPLOADED, StoredFile
from stateless.storage.repository import StoredFileRepository
from stateless.storage.schemas import (
    StoredObject,
    media_type_of,
    normalize_content_type,
    sanitize_filename,
)
from stateless.tenants.schemas import TenantContext

__all__ = ["SignedUrlService", "StorageService", "StoredObject"]

log = structlog.get_logger("stateless.storage")

KIND = "stored_files"
FILENAME_PURPOSE = "storage-filename"
# An upload URL is good for an hour (or less, if the object expires sooner).
UPLOAD_URL_SECONDS = 3600


class UnsupportedMediaType(ProblemError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ContentTypeMismatch(UnsupportedMediaType):
    code = "content_type_mismatch"


class InvalidContentType(Unprocessable):
    code = "invalid_content_type"


class AlreadyUploaded(Conflict):
    code = "already_uploaded"


def _not_found(object_id: str) -> ObjectNotFound:
    return ObjectNotFound(f"No object {object_id[:64]}")


def content_type_allowed(media_type: str, allowed: list[str] | None) -> bool:
    """No list: anything well-formed. Entries are exact ("image/png") or wildcards ("image/*")."""
    if not allowed:
        return True
    major = media_type.split("/", 1)[0]
    for entry in allowed:
        entry = entry.strip().lower()
        if entry in ("*/*", media_type) or entry == f"{major}/*":
            return True
    return False


def check_size(declared: int, max_bytes: int) -> None:
    if declared > max_bytes:
        raise UploadTooLarge(f"content_length exceeds the maximum upload size of {max_bytes} bytes")


def _mismatch_problem(row: StoredFile, size: int, content_type: str | None) -> ProblemError | None:
    """Compare what arrived with what was declared; the problem to answer, or None if equal."""
    if size > row.content_length:
        return UploadTooLarge(
            f"The upload is larger than the declared {row.content_length} bytes; it was deleted"
        )
    if size < row.content_length:
        return UploadIncomplete(
            f"The upload has {size} bytes, not the declared {row.content_length}; it was deleted"
        )
    if content_type is not None and media_type_of(content_type) != media_type_of(row.content_type):
        return ContentTypeMismatch(
            "The upload's Content-Type differs from the declared one; it was deleted"
        )
    return None


@dataclass(frozen=True, slots=True)
class ObjectView:
    row: StoredFile
    filename: str | None
    download_url: str | None
    download_url_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedUpload:
    row: StoredFile
    upload: UploadTarget
    upload_expires_at: datetime


class StorageService:
    """Tenant-facing storage operations; also the entry point other parts write files through."""

    def __init__(
        self,
        session: AsyncSession,
        tenant: TenantContext,
        *,
        kit: PrivacyKit,
        backend: StorageBackend,
        policy: TtlPolicy,
        max_upload_bytes: int,
        base_url: str,
    ) -> None:
        self.repo = StoredFileRepository(session, tenant)
        self.tenant = tenant
        self.kit = kit
        self.backend = backend
        self.policy = policy
        self.max_upload_bytes = max_upload_bytes
        self.base_url = base_url

    # -- helpers ------------------------------------------------------------------------------
    def _seal_filename(self, filename: str | None) -> str | None:
        clean = sanitize_filename(filename)
        if clean is None:
            return None
        return self.kit.encrypt_text(FILENAME_PURPOSE, self.tenant.app_id, clean)

    def open_filename(self, row: StoredFile) -> str | None:
        if row.filename_sealed is None:
            return None
        return self.kit.decrypt_text(FILENAME_PURPOSE, self.tenant.app_id, row.filename_sealed)

    def _new_row(
        self, content_type: str, content_length: int, filename: str | None, expires_at: datetime
    ) -> StoredFile:
        row = StoredFile(
            object_id=secrets.token_hex(16),
            storage_key=new_storage_key(self.tenant.app_id),
            content_type=content_type,
            content_length=content_length,
            filename_sealed=self._seal_filename(filename),
            status=STATUS_PENDING,
        )
        self.repo.add(row, expires_at)
        return row

    async def _download_url(self, row: StoredFile) -> tuple[str, datetime]:
        """Valid until the object expires (capped at 7 days, the SigV4 limit), never longer."""
        expires_at = min(
            row.expires_at, whole_seconds(utcnow()) + timedelta(seconds=MAX_PRESIGN_SECONDS)
        )
        url = await self.backend.presign_get(
            row.storage_key, expires_at=expires_at, base_url=self.base_url
        )
        return url, expires_at

    async def _row(self, object_id: str) -> StoredFile:
        row = await self.repo.by_id(object_id)
        if row is None:
            raise _not_found(object_id)
        return row

    # -- API ----------------------------------------------------------------------------------
    async def create_upload(
        self,
        *,
        content_type: str,
        content_length: int,
        ttl_seconds: int | None,
        filename: str | None,
    ) -> CreatedUpload:
        check_size(content_length, self.max_upload_bytes)
        media_type = media_type_of(content_type)
        if not content_type_allowed(media_type, self.tenant.config.allowed_content_types):
            raise UnsupportedMediaType(f"This app does not accept uploads of type {media_type}")
        now = utcnow()
        expires_at = self.policy.expires_at(KIND, ttl_seconds, now)
        row = self._new_row(content_type, content_length, filename, expires_at)
        upload_expires_at = min(
            expires_at, whole_seconds(now) + timedelta(seconds=UPLOAD_URL_SECONDS)
        )
        upload = await self.backend.presign_put(
            row.storage_key,
            content_type=content_type,
            expires_at=upload_expires_at,
            base_url=self.base_url,
        )
        await self.repo.session.flush()
        return CreatedUpload(row, upload, upload_expires_at)

    async def describe(self, object_id: str) -> ObjectView:
        """Metadata; a pending object is checked against the store, and a body that does not
        match its declaration is deleted and answered with a problem (413, 422 or 415)."""
        row = await self._row(object_id)
        if row.status == STATUS_PENDING:
            await self._verify_arrival(row)
        if row.status != STATUS_UPLOADED:
            return ObjectView(row, self.open_filename(row), None, None)
        url, url_expires_at = await self._download_url(row)
        return ObjectView(row, self.open_filename(row), url, url_expires_at)

    async def _verify_arrival(self, row: StoredFile) -> None:
        info = await self.backend.head(row.storage_key)
        if info is None:
            return
        problem = _mismatch_problem(row, info.size, info.content_type)
        if problem is not None:
            await self.backend.delete([row.storage_key])
            log.info("storage_upload_rejected", code=problem.code, tenant=self.tenant.app_id)
            raise problem
        now = utcnow()
        await self.repo.mark_uploaded(row.object_id, now)
        row.status, row.uploaded_at = STATUS_UPLOADED, now

    async def delete(self, object_id: str) -> None:
        """Body first, then the row: a failure leaves the row, so cleanup retries the body."""
        row = await self._row(object_id)
        await self.backend.delete([row.storage_key])
        await self.repo.delete_by_id(object_id)

    async def put_bytes(
        self,
        data: bytes,
        *,
        content_type: str,
        filename: str | None,
        ttl_seconds: int | None,
    ) -> StoredObject:
        """Store server-made bytes (exports, reports) and return a download URL valid until the
        object expires. Size is capped by MAX_UPLOAD_BYTES; the tenant's content-type allow-list
        governs client uploads only."""
        try:
            content_type = normalize_content_type(content_type)
        except ValueError as exc:
            raise InvalidContentType(str(exc)) from exc
        check_size(len(data), self.max_upload_bytes)
        now = utcnow()
        expires_at = self.policy.expires_at(KIND, ttl_seconds, now)
        row = self._new_row(content_type, len(data), filename, expires_at)
        row.status, row.uploaded_at = STATUS_UPLOADED, now
        await self.backend.put(row.storage_key, data, content_type=content_type)
        await self.repo.session.flush()
        url, _ = await self._download_url(row)
        return StoredObject(
            object_id=row.object_id,
            download_url=url,
            expires_at=expires_at,
            content_type=content_type,
            size_bytes=len(data),
        )


@dataclass(frozen=True, slots=True)
class Download:
    content_type: str
    size: int
    filename: str | None
    chunks: AsyncIterator[bytes]


def content_disposition(filename: str | None) -> str:
    """RFC 6266: an ASCII fallback plus the UTF-8 name; always an attachment."""
    if not filename:
        return "attachment"
    fallback = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class SignedUrlService:
    """The local backend's upload and download URLs, served by this API.

    The URL is the credential (no API key). Each step uses its own short transaction, so no
    database connection is held while a 100 MiB body streams in or out.
    """

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        kit: PrivacyKit,
        backend: StorageBackend,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.kit = kit
        self.backend: LocalBackend | None = backend if isinstance(backend, LocalBackend) else None

    def verify(self, token: str, method: Method) -> UrlGrant:
        if self.backend is None:  # S3 deployments hand out S3 URLs; these paths do not exist
            raise NotFound("Signed URLs of this API are not used with S3 storage")
        return self.backend.verify(token, method)

    async def _live_row(self, grant: UrlGrant, tenant: TenantContext) -> StoredFile:
        async with session_scope(self.sessionmaker) as session:
            repo = StoredFileRepository(session, tenant)
            row = await repo.by_key(grant.key)
        if row is None:
            raise ObjectNotFound("The object no longer exists")
        return row

    async def receive_upload(
        self,
        grant: UrlGrant,
        tenant: TenantContext,
        *,
        content_type: str | None,
        content_length: int | None,
        chunks: AsyncIterator[bytes],
    ) -> tuple[str, int]:
        assert self.backend is not None
        row = await self._live_row(grant, tenant)
        if row.status == STATUS_UPLOADED:
            raise AlreadyUploaded("This object has already been uploaded")
        if content_type is None or media_type_of(content_type) != media_type_of(row.content_type):
            raise ContentTypeMismatch(f"Send the declared Content-Type ({row.content_type})")
        if content_length is not None and content_length > row.content_length:
            raise UploadTooLarge(
                f"The upload is larger than the declared {row.content_length} bytes"
            )
        written = await self.backend.write_stream(
            row.storage_key, chunks, expected_length=row.content_length
        )
        async with session_scope(self.sessionmaker) as session:
            repo = StoredFileRepository(session, tenant)
            marked = await repo.mark_uploaded(row.object_id, utcnow())
        if not marked:  # deleted or expired while the body streamed in: keep nothing
            await self.backend.delete([row.storage_key])
            raise ObjectNotFound("The object no longer exists")
        return row.object_id, written

    async def open_download(self, grant: UrlGrant, tenant: TenantContext) -> Download:
        assert self.backend is not None
        row = await self._live_row(grant, tenant)
        info = await self.backend.head(row.storage_key)
        if row.status != STATUS_UPLOADED or info is None:
            raise ObjectNotFound("The object has no body yet")
        filename = None
        if row.filename_sealed is not None:
            filename = self.kit.decrypt_text(FILENAME_PURPOSE, grant.app_id, row.filename_sealed)
        return Download(row.content_type, info.size, filename, self.backend.stream(row.storage_key))
