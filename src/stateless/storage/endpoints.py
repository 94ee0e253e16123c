"""Storage API: declare an upload, PUT the body to the returned URL, read it back by URL.

The /uploads and /downloads paths are the local backend's signed URLs: the token in the path is
the credential, so they take no API key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from stateless.deps import API_V1, ContainerDep, SessionDep
from stateless.storage.schemas import (
    CreatedObject,
    CreateObjectIn,
    Deleted,
    ObjectOut,
    UploadDone,
    UploadInstruction,
)
from stateless.storage.service import (
    ObjectView,
    SignedUrlService,
    StorageService,
    content_disposition,
)
from stateless.storage.wiring import signed_url_service, storage_service
from stateless.tenants.auth import AnyKeyTenant, tenant_from_signed_url
from stateless.tenants.schemas import TenantContext

router = APIRouter(prefix=f"{API_V1}/storage", tags=["storage"])


async def _service(
    request: Request, session: SessionDep, tenant: AnyKeyTenant, container: ContainerDep
) -> StorageService:
    return storage_service(container, session, tenant, str(request.base_url))


Service = Annotated[StorageService, Depends(_service)]


async def _urls(container: ContainerDep) -> SignedUrlService:
    return signed_url_service(container)


Urls = Annotated[SignedUrlService, Depends(_urls)]


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


@router.post("/objects", name="storage.create", status_code=201, response_model=CreatedObject)
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


@router.get("/objects/{object_id}", name="storage.read", response_model=ObjectOut)
async def read_object(object_id: str, service: Service, tenant: AnyKeyTenant) -> ObjectOut:
    """Metadata and, once the body has arrived, a `download_url` valid until the object expires.

    `status` is `pending` (and `download_url` null) until the upload is complete.
    """
    return _out(await service.describe(object_id), tenant)


@router.delete("/objects/{object_id}", name="storage.delete", response_model=Deleted)
async def delete_object(object_id: str, service: Service) -> Deleted:
    """Delete the body and its metadata now; outstanding URLs stop working."""
    await service.delete(object_id)
    return Deleted()


@router.put("/uploads/{token}", name="storage.upload", response_model=UploadDone)
async def upload_body(
    token: str, request: Request, urls: Urls, container: ContainerDep
) -> UploadDone:
    """Local storage only: the signed upload URL. The body must have the declared type and size."""
    grant = urls.verify(token, "PUT")
    tenant = await tenant_from_signed_url(request, container, grant.app_id)
    length_header = request.headers.get("content-length")
    object_id, written = await urls.receive_upload(
        grant,
        tenant,
        content_type=request.headers.get("content-type"),
        content_length=int(length_header) if length_header and length_header.isdigit() else None,
        chunks=request.stream(),
    )
    return UploadDone(object_id=object_id, size_bytes=written)


@router.get("/downloads/{token}", name="storage.download", response_class=StreamingResponse)
async def download_body(
    token: str, request: Request, urls: Urls, container: ContainerDep
) -> StreamingResponse:
    """Local storage only: the signed download URL, streamed as an attachment."""
    grant = urls.verify(token, "GET")
    tenant = await tenant_from_signed_url(request, container, grant.app_id)
    download = await urls.open_download(grant, tenant)
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
