"""Storage end to end over HTTP: declare, upload through the returned URL, download, expire,
delete; on the local backend and on a real S3-protocol server (moto)."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from stateless.storage.lifecycle import OrphanSweep
from tests.conftest import TenantFactory, TenantHandle
from tests.privacy import assert_not_stored
from tests.storage.conftest import Storage
from tests.support import count_rows, expire_rows
from tests.test_core import assert_problem

OBJECTS = "/api/v1/storage/objects"
MAX_UPLOAD = 100 * 1024 * 1024


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _declare(
    storage: Storage, tenant: TenantHandle, data: bytes, content_type: str = "image/png", **extra
) -> dict:
    r = await storage.client.post(
        OBJECTS,
        headers=tenant.pk,
        json={"content_type": content_type, "content_length": len(data), **extra},
    )
    assert r.status_code == 201, r.text
    return r.json()


async def _upload(storage: Storage, created: dict, data: bytes):
    upload = created["upload"]
    return await storage.transfer(
        upload["method"], upload["url"], headers=upload["headers"], content=data
    )


async def test_upload_then_download_returns_identical_bytes(
    storage: Storage, tenant: TenantHandle, settings, capsys: pytest.CaptureFixture[str]
) -> None:
    data = os.urandom(300_000) + b"the end"
    filename = "alice.smith@example.com passport.png"
    created = await _declare(storage, tenant, data, filename=filename, ttl_seconds=3600)
    assert set(created) == {"object_id", "upload", "expires_at"}
    assert created["upload"]["method"] == "PUT"
    assert created["upload"]["headers"] == {"Content-Type": "image/png"}
    life = _ts(created["expires_at"]) - datetime.now(_ts(created["expires_at"]).tzinfo)
    assert timedelta(minutes=59) < life <= timedelta(hours=1)

    pending = await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk)
    assert pending.status_code == 200
    assert pending.json()["status"] == "pending" and pending.json()["download_url"] is None

    put = await _upload(storage, created, data)
    assert put.status_code == 200, put.text

    meta = await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.sk)
    assert meta.status_code == 200, meta.text
    body = meta.json()
    assert body["status"] == "uploaded"
    assert body["content_length"] == len(data) and body["content_type"] == "image/png"
    assert body["filename"] == filename
    assert _ts(body["download_url_expires_at"]) <= _ts(body["expires_at"])

    got = await storage.transfer("GET", body["download_url"])
    assert got.status_code == 200
    assert got.content == data
    key = await storage.storage_key(created["object_id"])
    assert key.startswith(f"{tenant.app_id}/") and storage.body(key) == data
    # the filename (which names a person) is sealed at rest and never logged
    await assert_not_stored(
        settings, [filename, "alice.smith@example.com"], logs=capsys.readouterr().out
    )


async def test_s3_urls_are_presigned_and_never_outlive_the_object(
    s3: Storage, tenant: TenantHandle
) -> None:
    """Moto does not check SigV4 expiry, so assert what we sign: the validity we ask S3 for."""
    storage = s3
    data = b"x" * 10
    created = await _declare(storage, tenant, data, ttl_seconds=120)
    query = parse_qs(urlsplit(created["upload"]["url"]).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert 110 <= int(query["X-Amz-Expires"][0]) <= 120
    assert (await _upload(storage, created, data)).status_code == 200
    meta = (await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk)).json()
    query = parse_qs(urlsplit(meta["download_url"]).query)
    assert 100 <= int(query["X-Amz-Expires"][0]) <= 120
    assert query["X-Amz-Signature"][0]


async def test_expired_upload_and_download_urls_are_refused(
    local: Storage, tenant: TenantHandle
) -> None:
    data = b"short-lived"
    # Long enough to upload and download on a loaded machine; then wait for the instant the
    # object says it expires (not a shorter clock of our own).
    created = await _declare(local, tenant, data, ttl_seconds=6)
    assert (await _upload(local, created, data)).status_code == 200
    meta = (await local.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk)).json()
    assert (await local.transfer("GET", meta["download_url"])).content == data
    expires_at = _ts(created["expires_at"])
    await asyncio.sleep(max(0.0, (expires_at - datetime.now(expires_at.tzinfo)).total_seconds()))
    await asyncio.sleep(0.2)
    assert_problem(await local.transfer("GET", meta["download_url"]), 403, "url_expired")
    again = await local.transfer(
        "PUT", created["upload"]["url"], headers=created["upload"]["headers"], content=data
    )
    assert_problem(again, 403, "url_expired")


async def test_tampered_urls_are_refused(local: Storage, tenant: TenantHandle) -> None:
    data = b"signed"
    created = await _declare(local, tenant, data)
    url = created["upload"]["url"]
    head, _, signature = url.rpartition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    r = await local.transfer(
        "PUT", f"{head}.{flipped}", headers=created["upload"]["headers"], content=data
    )
    assert_problem(r, 403, "invalid_signature")
    # a later expiry with the old signature, and another tenant's prefix, are refused too
    app, name, expires, sig = url.rsplit("/", 1)[1].split(".")
    base = url.rsplit("/", 1)[0]
    for token in (
        f"{app}.{name}.{int(expires) + 3600}.{sig}",
        f"app-b.{name}.{expires}.{sig}",
        "garbage",
    ):
        r = await local.transfer(
            "PUT", f"{base}/{token}", headers=created["upload"]["headers"], content=data
        )
        assert_problem(r, 403, "invalid_signature")
    assert local.bodies() == []
    # an upload URL does not work as a download URL
    assert (await _upload(local, created, data)).status_code == 200
    download = url.replace("/uploads/", "/downloads/")
    assert_problem(await local.transfer("GET", download), 403, "invalid_signature")


async def test_over_length_upload_is_refused_and_nothing_kept(
    storage: Storage, tenant: TenantHandle
) -> None:
    declared = b"a" * 1000
    created = await _declare(storage, tenant, declared)
    oversized = declared + b"extra bytes"
    put = await _upload(storage, created, oversized)
    if storage.kind == "local":
        assert_problem(put, 413, "upload_too_large")

        # streamed without Content-Length: stopped at the first byte past the declaration
        async def chunks():
            for _ in range(4):
                yield b"b" * 400

        streamed = await _upload(storage, created, chunks())  # type: ignore[arg-type]
        assert_problem(streamed, 413, "upload_too_large")
    else:
        assert put.status_code == 200  # S3 cannot bind the length; we check before serving it
    meta = await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk)
    if storage.kind == "s3":
        assert_problem(meta, 413, "upload_too_large")
        meta = await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk)
    assert meta.json()["status"] == "pending" and meta.json()["download_url"] is None
    assert storage.bodies() == []
    # the declared bytes still go through afterwards
    assert (await _upload(storage, created, declared)).status_code == 200
    meta = await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk)
    assert (await storage.transfer("GET", meta.json()["download_url"])).content == declared


async def test_short_upload_and_wrong_type_are_refused(
    storage: Storage, tenant: TenantHandle
) -> None:
    created = await _declare(storage, tenant, b"c" * 100)
    short = await _upload(storage, created, b"c" * 99)
    if storage.kind == "local":
        assert_problem(short, 422, "upload_incomplete")
        wrong = await storage.transfer(
            "PUT",
            created["upload"]["url"],
            headers={"Content-Type": "text/html"},
            content=b"c" * 100,
        )
        assert_problem(wrong, 415, "content_type_mismatch")
    else:
        assert_problem(
            await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk),
            422,
            "upload_incomplete",
        )
        wrong = await storage.transfer(
            "PUT",
            created["upload"]["url"],
            headers={"Content-Type": "text/html"},
            content=b"c" * 100,
        )
        assert wrong.status_code == 200
        assert_problem(
            await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk),
            415,
            "content_type_mismatch",
        )
    assert storage.bodies() == []


async def test_upload_is_write_once_on_local_storage(local: Storage, tenant: TenantHandle) -> None:
    created = await _declare(local, tenant, b"once")
    assert (await _upload(local, created, b"once")).status_code == 200
    assert_problem(await _upload(local, created, b"twice"[:4]), 409, "already_uploaded")


async def test_another_tenants_object_is_404_like_an_unknown_id(
    storage: Storage, tenant: TenantHandle, other_tenant: TenantHandle
) -> None:
    created = await _declare(storage, tenant, b"mine")
    assert (await _upload(storage, created, b"mine")).status_code == 200
    oid = created["object_id"]
    for method in ("GET", "DELETE"):
        theirs = await storage.client.request(method, f"{OBJECTS}/{oid}", headers=other_tenant.sk)
        unknown = await storage.client.request(
            method, f"{OBJECTS}/{'0' * 32}", headers=other_tenant.sk
        )
        assert_problem(theirs, 404, "object_not_found")
        assert_problem(unknown, 404, "object_not_found")
        assert theirs.json()["title"] == unknown.json()["title"]
    # still there for its owner
    assert (await storage.client.get(f"{OBJECTS}/{oid}", headers=tenant.pk)).json()[
        "status"
    ] == "uploaded"


async def test_expired_objects_lose_row_and_body_on_cleanup(
    storage: Storage, tenant: TenantHandle, settings
) -> None:
    keep = await _declare(storage, tenant, b"keep me")
    assert (await _upload(storage, keep, b"keep me")).status_code == 200
    gone = await _declare(storage, tenant, b"expire me")
    assert (await _upload(storage, gone, b"expire me")).status_code == 200
    never = await _declare(storage, tenant, b"never uploaded")
    gone_key = await storage.storage_key(gone["object_id"])
    keep_key = await storage.storage_key(keep["object_id"])
    assert storage.body(gone_key) == b"expire me"

    await expire_rows(
        settings, "stored_files", "object_id IN (:a, :b)", a=gone["object_id"], b=never["object_id"]
    )
    # invisible at once, before cleanup runs
    assert_problem(
        await storage.client.get(f"{OBJECTS}/{gone['object_id']}", headers=tenant.pk),
        404,
        "object_not_found",
    )
    r = await storage.client.post("/api/v1/admin/cleanup", headers=tenant.sk)
    assert r.status_code == 200 and r.json()["deleted"]["stored_files"] == 2
    assert await count_rows(settings, "stored_files", "object_id = :i", i=gone["object_id"]) == 0
    assert storage.body(gone_key) is None
    assert storage.body(keep_key) == b"keep me"
    assert len(storage.bodies()) == 1


async def test_erasing_tenant_data_deletes_bodies(
    storage: Storage, tenant: TenantHandle, other_tenant: TenantHandle, settings
) -> None:
    for handle in (tenant, other_tenant):
        created = await _declare(storage, handle, b"data of " + handle.app_id.encode())
        assert (
            await _upload(storage, created, b"data of " + handle.app_id.encode())
        ).status_code == 200
    r = await storage.client.delete("/api/v1/admin/data", headers=tenant.sk)
    assert r.status_code == 200 and r.json()["deleted"]["stored_files"] == 1
    assert [k.split("/")[-2] for k in storage.bodies()] == [other_tenant.app_id]


async def test_path_traversal_filenames_are_harmless(
    storage: Storage, tenant: TenantHandle
) -> None:
    cases = {
        "../../../../etc/passwd": "passwd",
        "..\\..\\windows\\system.ini": "system.ini",
        "/": None,
        "..": None,
        'evil"; filename=x.exe\r\nSet-Cookie: a=b': "evil_; filename=x.exe__Set-Cookie_ a=b",
    }
    for raw, expected in cases.items():
        created = await _declare(storage, tenant, b"payload", filename=raw)
        assert (await _upload(storage, created, b"payload")).status_code == 200
        meta = (
            await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk)
        ).json()
        assert meta["filename"] == expected
        key = await storage.storage_key(created["object_id"])
        assert ".." not in key and key.count("/") == 1 and key.startswith(f"{tenant.app_id}/")
        got = await storage.transfer("GET", meta["download_url"])
        assert got.content == b"payload"
        if storage.kind == "local":
            disposition = got.headers["content-disposition"]
            assert "\r" not in disposition and "\n" not in disposition and "/" not in disposition
            assert got.headers["x-content-type-options"] == "nosniff"
    if storage.kind == "local":
        root = Path(storage.settings.storage_local_path)
        files = [p for p in root.parent.rglob("*") if p.is_file()]
        assert files and all(p.parent.parent == root for p in files)
    assert all(k.split("/")[-2] == tenant.app_id for k in storage.bodies())


async def test_delete_removes_body_and_row(
    storage: Storage, tenant: TenantHandle, settings
) -> None:
    created = await _declare(storage, tenant, b"delete me")
    assert (await _upload(storage, created, b"delete me")).status_code == 200
    meta = (await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk)).json()
    key = await storage.storage_key(created["object_id"])
    r = await storage.client.delete(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk)
    assert r.status_code == 200 and r.json() == {"status": "deleted"}
    assert storage.body(key) is None and storage.bodies() == []
    assert await count_rows(settings, "stored_files") == 0
    assert_problem(
        await storage.client.get(f"{OBJECTS}/{created['object_id']}", headers=tenant.pk),
        404,
        "object_not_found",
    )
    assert (await storage.transfer("GET", meta["download_url"])).status_code == 404


async def test_content_type_allow_list_answers_415(
    storage: Storage, make_tenant: TenantFactory
) -> None:
    picky = await make_tenant("picky", allowed_content_types=["image/*", "application/pdf"])
    for content_type, status in (
        ("image/png", 201),
        ("IMAGE/JPEG", 201),
        ("application/pdf", 201),
        ("text/html", 415),
        ("application/x-msdownload", 415),
    ):
        r = await storage.client.post(
            OBJECTS, headers=picky.pk, json={"content_type": content_type, "content_length": 5}
        )
        if status == 415:
            assert_problem(r, 415, "unsupported_media_type")
        else:
            assert r.status_code == 201, r.text


async def test_declared_size_type_and_ttl_are_validated(
    storage: Storage, tenant: TenantHandle
) -> None:
    def declare(**body):
        return storage.client.post(
            OBJECTS,
            headers=tenant.pk,
            json={"content_type": "image/png", "content_length": 1, **body},
        )

    assert_problem(await declare(content_length=MAX_UPLOAD + 1), 413, "upload_too_large")
    assert (await declare(content_length=MAX_UPLOAD)).status_code == 201
    assert (await declare(ttl_seconds=1)).status_code == 201
    assert_problem(await declare(content_length=-1), 422, "validation_error")
    assert_problem(await declare(content_type="not a type"), 422, "validation_error")
    assert_problem(await declare(content_type="text/html\r\nX: y"), 422, "validation_error")
    assert_problem(await declare(ttl_seconds=7 * 24 * 3600 + 1), 422, "ttl_out_of_range")
    assert_problem(
        await storage.client.post(OBJECTS, json={"content_type": "image/png", "content_length": 1}),
        400,
        "missing_app_id",
    )
    assert storage.bodies() == []


async def test_put_bytes_contract_for_other_parts(storage: Storage, tenant: TenantHandle) -> None:
    """Exports write through StorageService.put_bytes and hand out its download URL."""
    from stateless.kit.data.db import session_scope
    from stateless.storage.wiring import storage_service
    from stateless.tenants.schemas import TenantConfig, TenantContext, VerifiedAppId

    container = storage.client.app.state.container
    context = TenantContext(VerifiedAppId(tenant.app_id), "secret", "k", TenantConfig(), None)
    async with session_scope(container.sessionmaker) as session:
        service = storage_service(container, session, context, "http://testserver")
        stored = await service.put_bytes(
            b'{"export": true}',
            content_type="application/json",
            filename="export.json",
            ttl_seconds=600,
        )
    assert stored.expires_at > datetime.now(stored.expires_at.tzinfo)
    assert (await storage.transfer("GET", stored.download_url)).content == b'{"export": true}'
    meta = (await storage.client.get(f"{OBJECTS}/{stored.object_id}", headers=tenant.pk)).json()
    assert meta["status"] == "uploaded" and meta["filename"] == "export.json"


async def test_orphan_sweep_removes_bodies_without_rows(
    storage: Storage, tenant: TenantHandle
) -> None:
    container = storage.client.app.state.container
    kept = await _declare(storage, tenant, b"has a row")
    assert (await _upload(storage, kept, b"has a row")).status_code == 200
    await container.storage.put(
        f"{tenant.app_id}/orphan-body", b"no row", content_type="text/plain"
    )
    assert len(storage.bodies()) == 2
    sweep = OrphanSweep(container.storage, container.sessionmaker, container.lifecycle.policy)
    # young orphans are left alone (an upload may be racing its row)
    assert await sweep.sweep() == 0
    assert await sweep.sweep(min_age=timedelta(0)) == 1
    assert len(storage.bodies()) == 1
    assert storage.body(await storage.storage_key(kept["object_id"])) == b"has a row"


async def test_urls_use_public_base_url_when_set(make_client, tenant: TenantHandle) -> None:
    client = await make_client(public_base_url="https://files.example.com/")
    r = await client.post(
        OBJECTS, headers=tenant.pk, json={"content_type": "text/plain", "content_length": 2}
    )
    assert r.status_code == 201
    assert r.json()["upload"]["url"].startswith("https://files.example.com/api/v1/storage/uploads/")
