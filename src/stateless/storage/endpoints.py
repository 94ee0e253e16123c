"""Storage API: declare an upload, PUT the body to the returned URL, read it back by URL.

The /uploads and /downloads paths are the local backend's signed URLs: the token in the path is
the credential, so they take no API key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from stateless.container import Container
from stateless.deps import API_V1, KeyedService, api_router
from stateless.kit.data.context import TenantContext
from stateless.kit.web.errors import NotFound, RateLimited
from stateless.kit.web.openapi import problems
from stateless.lifecycle.policy import TtlOutOfRange
from stateless.storage.backends import (
    InvalidSignature,
    Method,
    ObjectNotFound,
    UploadIncomplete,
    UploadTooLarge,
    UrlExpired,
    UrlGrant,
)
from stateless.storage.schemas import (
    CreatedObject,
    CreateObjectIn,
    Deleted,
    ObjectOut,
    UploadDone,
    UploadInstruction,
)
from stateless.storage.service import (
    AlreadyUploaded,
    ContentTypeMismatch,
    InvalidContentType,
    ObjectView,
    SignedUrlService,
    StorageService,
    UnsupportedMediaType,
    content_disposition,
)
from stateless.storage.wiring import signed_url_service, storage_service
from stateless.tenants.auth import tenant_from_signed_url

router = api_router(f"{API_V1}/storage", ["storage"])


def _build(
    container: Container, session: AsyncSession, tenant: TenantContext, request: Request
) -> StorageService:
    return storage_service(container, session, tenant, str(request.base_url))


Service = Annotated[StorageService, Depends(KeyedService(_build, "any"))]


@dataclass(frozen=True, slots=True)
class SignedTransfer:
    """A verified signed URL: the service, what the URL grants, and the tenant it names."""

    urls: SignedUrlService
    grant: UrlGrant
    tenant: TenantContext


class _SignedUrl:
    """Route-group dependency of the signed URLs: the URL is the credential. Check its MAC and
    expiry, then rate-limit its tenant like a keyed request."""

    # What this checkpoint may answer (documented by kit/web/openapi.py).
    raises = (NotFound, InvalidSignature, UrlExpired, RateLimited)

    def __init__(self, method: Method) -> None:
        self.method: Method = method

    async def __call__(self, request: Request, token: str) -> SignedTransfer:
        container: Container = request.app.state.container
        urls = signed_url_service(container)
        grant = urls.verify(token, self.method)
        tenant = await tenant_from_signed_url(request, container, grant.app_id)
        return SignedTransfer(urls, grant, tenant)


Upload = Annotated[SignedTransfer, Depends(_SignedUrl("PUT"))]
Download = Annotated[SignedTransfer, Depends(_SignedUrl("GET"))]


def _out(view: ObjectView, tenant: TenantContext) -> ObjectOut:
    row = view.row
    return ObjectOut(
        object_id=row.object_id,
        status="uploaded" if row.status == "uploaded" else "pending",
        content_type=row.content_type,
        content_length=row.content_length,
        filename=view.filename,
        created_at=row.created_at,
        expires_at=row.expires_at,
        uploaded_at=row.uploaded_at,
        download_url=view.download_url,
        download_url_expires_at=view.download_url_expires_at,
        tenant=tenant.app_id,
    )


@router.post(
    "/objects",
    name="storage.create",
    summary="Declare a file and get its upload URL",
    status_code=201,
    response_model=CreatedObject,
    responses=problems(UnsupportedMediaType, InvalidContentType, UploadTooLarge, TtlOutOfRange),
)
async def create_object(body: CreateObjectIn, service: Service) -> CreatedObject:
    """Declare a file (type, exact size, lifetime) and get a signed URL to PUT its body to.

    Send the body with the returned method and headers before `upload.expires_at` (at most one
    hour). Bodies that differ from the declaration are refused and deleted.
    """
    created = await service.create_upload(
        content_type=body.content_type,
        content_length=body.content_length,
        ttl_seconds=body.ttl_seconds,
        filename=body.filename,
    )
    return CreatedObject(
        object_id=created.row.object_id,
        upload=UploadInstruction(
            method=created.upload.method,
            url=created.upload.url,
            headers=created.upload.headers,
            expires_at=created.upload_expires_at,
        ),
        expires_at=created.row.expires_at,
    )


@router.get(
    "/objects/{object_id}",
    name="storage.read",
    summary="Read a file's metadata and download URL",
    response_model=ObjectOut,
    responses=problems(ObjectNotFound),
)
async def read_object(object_id: str, service: Service) -> ObjectOut:
    """Metadata and, once the body has arrived, a `download_url` valid until the object expires.

    `status` is `pending` (and `download_url` null) until the upload is complete.
    """
    return _out(await service.describe(object_id), service.tenant)


@router.delete(
    "/objects/{object_id}",
    name="storage.delete",
    summary="Delete a file",
    response_model=Deleted,
    responses=problems(ObjectNotFound),
)
async def delete_object(object_id: str, service: Service) -> Deleted:
    """Delete the body and its metadata now; outstanding URLs stop working."""
    await service.delete(object_id)
    return Deleted()


@router.put(
    "/uploads/{token}",
    name="storage.upload",
    summary="Upload a file body (local storage)",
    response_model=UploadDone,
    responses=problems(
        ObjectNotFound,
        AlreadyUploaded,
        ContentTypeMismatch,
        UploadTooLarge,
        UploadIncomplete,
    ),
)
async def upload_body(token: str, request: Request, upload: Upload) -> UploadDone:
    """Local storage only: the signed upload URL. The body must have the declared type and size."""
    length_header = request.headers.get("content-length")
    object_id, written = await upload.urls.receive_upload(
        upload.grant,
        upload.tenant,
        content_type=request.headers.get("content-type"),
        content_length=int(length_header) if length_header and length_header.isdigit() else None,
        chunks=request.stream(),
    )
    return UploadDone(object_id=object_id, size_bytes=written)


@router.get(
    "/downloads/{token}",
    name="storage.download",
    summary="Download a file body (local storage)",
    response_class=StreamingResponse,
    responses=problems(ObjectNotFound),
)
async def download_body(token: str, signed: Download) -> StreamingResponse:
    """Local storage only: the signed download URL, streamed as an attachment."""
    download = await signed.urls.open_download(signed.grant, signed.tenant)
    return StreamingResponse(
        download.chunks,
        media_type=download.content_type,
        headers={
            "Content-Length": str(download.size),
            "Content-Disposition": content_disposition(download.filename),
            "X-Content-Type-Options": "nosniff",
            # bodies are the tenant's users' files: never run them as pages of this origin
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, no-store",
        },
    )
