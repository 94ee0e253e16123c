"""A real headless Chromium against a real uvicorn server: a page on its own origin does the
docs/api.md flow with `fetch` (storage upload and byte-exact download included) and reads every
problem a misconfigured page can cause; a page on an unlisted origin is refused and writes nothing.

Driven through Playwright (tests/browser/playwright_pages.py) with request routing off: while
Playwright routes it answers CORS preflights itself (allow-all), and the stranger's draft would
then reach the server. Unrouted, the CORS decisions seen here are Chromium's own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from bench.procs import free_port, kill, wait_ready
from playwright.async_api import Page

from stateless.config import Settings
from tests.browser.playwright_pages import open_browser
from tests.conftest import TenantFactory, TenantHandle
from tests.support import sql

# The page's own code: the `api` helper of docs/api.md, with its base, app id and key set.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>stateless browser client</title></head>
<body><script>
let BASE = "", APP_ID = "", KEY = "";
async function api(method, path, body, extraHeaders = {}) {
  const res = await fetch(BASE + path, {
    method,
    headers: {
      "X-App-ID": APP_ID,
      Authorization: `Bearer ${KEY}`,
      ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
      ...extraHeaders,
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) {
    const err = new Error(data?.detail ?? res.statusText);
    Object.assign(err, { status: res.status, code: data?.code, requestId: data?.request_id,
                         retryAfter: res.headers.get("Retry-After") });
    throw err;
  }
  return data;
}
// What a page sees of a problem: status, code, and the headers CORS lets it read.
async function problem(promise) {
  try {
    const res = await promise;
    const body = await res.json();
    return { status: res.status, code: body.code, requestId: res.headers.get("X-Request-ID"),
             wwwAuthenticate: res.headers.get("WWW-Authenticate") };
  } catch (e) {
    return { error: String(e) };
  }
}
</script></body></html>
"""


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """Serve `directory` on its own origin (a second local port)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=directory))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def api_server(settings: Settings, root: Path) -> Iterator[str]:
    """`stateless serve` (uvicorn) on 127.0.0.1, on the test database."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)},
        "DATABASE_URL": settings.database_url,
        "SECRET_KEY": settings.secret_key,
        "AFFILIATE_SALT": settings.affiliate_salt,
        "ENVIRONMENT": "test",
        "STORAGE_LOCAL_PATH": str(root / "storage"),
        "RUN_BACKGROUND_JOBS": "false",
        "MAX_REQUEST_BODY_BYTES": str(2 * 1024 * 1024),
        "WEBPUSH_ALLOW_PRIVATE_NETWORKS": "true",
        "LOG_LEVEL": "WARNING",
        "PORT": str(port),
    }
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stateless.cli", "serve"],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base
    finally:
        kill(proc)
        log.close()


@pytest.fixture
async def stack(
    settings: Settings, tmp_path: Path, make_tenant: TenantFactory
) -> AsyncIterator[dict[str, Any]]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    with static_site(site) as page_origin, static_site(site) as stranger_origin:
        tenant = await make_tenant(
            "browser-app",
            cors_origins=[page_origin],
            webpush_generate_keys=True,
            webpush_contact="mailto:ops@example.com",
        )
        with api_server(settings, tmp_path) as base:
            async with open_browser(tmp_path, allowed_hosts=None) as browser:
                pages = []
                for origin in (page_origin, stranger_origin):
                    page = await browser.new_page()
                    await page.goto(origin + "/index.html", wait_until="load")
                    pages.append(page)
                yield {
                    "base": base,
                    "tenant": tenant,
                    "page": pages[0],
                    "stranger": pages[1],
                    "page_origin": page_origin,
                }


def _configure(page: Page, base: str, tenant: TenantHandle, key: str | None = None) -> str:
    values = orjson.dumps([base, tenant.app_id, key or tenant.publishable_key]).decode()
    return f"[BASE, APP_ID, KEY] = {values}"


FLOW = """
(async () => {
  const report = {};
  report.root = await api("GET", "/");
  const draft = await api("POST", "/api/v1/drafts", { content: "Dear diary", ttl_seconds: 3600 });
  report.draftRead = (await api("GET", `/api/v1/drafts/${draft.id}`)).content;
  await api("PUT", `/api/v1/drafts/${draft.id}`, { content: "Dear diary, v2" });
  report.draftUpdated = (await api("GET", `/api/v1/drafts/${draft.id}`)).content;
  report.draftDeleted = (await api("DELETE", `/api/v1/drafts/${draft.id}`)).status;
  report.code = (await api("POST", "/api/v1/affiliate/generate", { code_id: "user-8271" })).code;
  report.registered = (await api("POST", "/api/v1/ios/register-token",
    { token: "ab".repeat(32), device_id: "browser-device" })).status;

  // Web Push: the VAPID key, then a subscription shaped like PushSubscription.toJSON()
  const vapid = (await api("GET", "/api/v1/web/vapid-public-key")).public_key;
  report.vapidKeyBytes = Uint8Array.from(atob(vapid.replace(/-/g, "+").replace(/_/g, "/")),
                                         c => c.charCodeAt(0)).length;
  const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true,
                                               ["deriveBits"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const b64url = (bytes) => btoa(String.fromCharCode(...bytes))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const subscription = { endpoint: "https://127.0.0.1:9/push/browser", expirationTime: null,
    keys: { p256dh: b64url(raw), auth: b64url(crypto.getRandomValues(new Uint8Array(16))) } };
  report.subscribed = (await api("POST", "/api/v1/web/subscribe",
    { subscription, subscriber_id: "browser-user" })).status;

  // Storage: declare, upload to the signed URL, read metadata, download byte for byte
  const bytes = new Uint8Array(300000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >> 8)) & 255;
  const file = new Blob([bytes], { type: "application/octet-stream" });
  const created = await api("POST", "/api/v1/storage/objects",
    { content_type: file.type, content_length: file.size, filename: "notes.bin" });
  const up = await fetch(created.upload.url,
    { method: created.upload.method, headers: created.upload.headers, body: file });
  report.uploadStatus = up.status;
  report.uploadRequestId = up.headers.get("X-Request-ID");
  const meta = await api("GET", `/api/v1/storage/objects/${created.object_id}`);
  report.objectStatus = meta.status;
  const down = await fetch(meta.download_url);
  const got = new Uint8Array(await down.arrayBuffer());
  report.downloadStatus = down.status;
  report.downloadDisposition = down.headers.get("Content-Disposition");
  report.downloadLength = got.length;
  report.downloadExact = got.length === bytes.length && got.every((b, i) => b === bytes[i]);
  // a second upload to the same URL is refused, and the page can read why
  const again = await fetch(created.upload.url,
    { method: created.upload.method, headers: created.upload.headers, body: file });
  report.secondUpload = { status: again.status, code: (await again.json()).code };
  report.deleted = (await api("DELETE", `/api/v1/storage/objects/${created.object_id}`)).status;
  report.objectId = created.object_id;
  return report;
})()
"""

PROBLEMS = """
(async () => {
  const json = { "Content-Type": "application/json" };
  const auth = { Authorization: `Bearer ${KEY}` };
  const draft = JSON.stringify({ content: "x" });
  const post = (headers, body = draft) =>
    fetch(BASE + "/api/v1/drafts", { method: "POST", headers, body });
  return {
    missingAppId: await problem(post({ ...json, ...auth })),
    tooLongAppId: await problem(post({ ...json, ...auth, "X-App-ID": "a".repeat(65) })),
    badAppId: await problem(post({ ...json, ...auth, "X-App-ID": "../etc" })),
    unknownApp: await problem(post({ ...json, ...auth, "X-App-ID": "no-such-app" })),
    wrongKey: await problem(post({ ...json, "X-App-ID": APP_ID,
                                   Authorization: "Bearer pk_000000000000_nope" })),
    noKey: await problem(post({ ...json, "X-App-ID": APP_ID })),
    secretOnly: await problem(fetch(BASE + "/api/v1/admin/stats",
                                    { headers: { "X-App-ID": APP_ID, ...auth } })),
    notFound: await problem(fetch(BASE + "/api/v1/drafts/does-not-exist",
                                  { headers: { "X-App-ID": APP_ID, ...auth } })),
    noRoute: await problem(fetch(BASE + "/api/v1/nowhere", { headers: { ...auth } })),
    tooLarge: await problem(post({ ...json, ...auth, "X-App-ID": APP_ID },
                                 "x".repeat(3 * 1024 * 1024))),
    notJson: await problem(post({ "Content-Type": "text/plain", ...auth, "X-App-ID": APP_ID },
                                "content=x")),
    badBody: await problem(post({ ...json, ...auth, "X-App-ID": APP_ID }, "{")),
    badSignature: await problem(fetch(BASE + "/api/v1/storage/downloads/browser-app.x.1.y")),
  };
})()
"""


async def test_a_page_on_a_listed_origin_does_the_whole_docs_flow(
    stack: dict[str, Any], settings: Settings
) -> None:
    page: Page = stack["page"]
    await page.evaluate(_configure(page, stack["base"], stack["tenant"]))
    report = await page.evaluate(FLOW)
    assert report["root"]["tenant"] == "browser-app"
    assert report["draftRead"] == "Dear diary"
    assert report["draftUpdated"] == "Dear diary, v2"
    assert report["draftDeleted"] == "deleted"
    assert report["code"]
    assert report["registered"] == "registered"
    assert report["vapidKeyBytes"] == 65
    assert report["subscribed"] == "subscribed"
    assert report["uploadStatus"] in (200, 201)
    assert report["uploadRequestId"]
    assert report["objectStatus"] == "uploaded"
    assert report["downloadStatus"] == 200
    assert report["downloadLength"] == 300000
    assert report["downloadExact"] is True
    assert "notes.bin" in report["downloadDisposition"]
    assert report["secondUpload"] == {"status": 409, "code": "already_uploaded"}
    assert report["deleted"] == "deleted"
    rows = await sql(settings, "SELECT count(*) FROM webpush_subscriptions")
    assert rows[0][0] == 1


async def test_every_problem_a_misconfigured_page_causes_is_readable(
    stack: dict[str, Any],
) -> None:
    page: Page = stack["page"]
    await page.evaluate(_configure(page, stack["base"], stack["tenant"]))
    seen = await page.evaluate(PROBLEMS)
    expected = {
        "missingAppId": (400, "missing_app_id"),
        "tooLongAppId": (400, "invalid_app_id"),
        "badAppId": (400, "invalid_app_id"),
        "unknownApp": (401, "unauthorized"),
        "wrongKey": (401, "unauthorized"),
        "noKey": (401, "unauthorized"),
        "secretOnly": (403, "insufficient_scope"),
        "notFound": (404, "draft_not_found"),
        "noRoute": (404, "not_found"),
        "tooLarge": (413, "payload_too_large"),
        "badSignature": (403, "invalid_signature"),
    }
    for name, (status, code) in expected.items():
        assert "error" not in seen[name], (name, seen[name])
        assert (seen[name]["status"], seen[name]["code"]) == (status, code), name
        assert seen[name]["requestId"], name
    # a body the API cannot take as JSON: readable too, whatever its exact status
    for name in ("notJson", "badBody"):
        assert "error" not in seen[name], (name, seen[name])
        assert seen[name]["status"] in (400, 415, 422), (name, seen[name])
    # 401s read the same whether the app exists or not, challenge included
    for name in ("unknownApp", "wrongKey", "noKey"):
        assert seen[name]["wwwAuthenticate"] == "Bearer"


async def test_a_page_on_an_unlisted_origin_is_refused_and_writes_nothing(
    stack: dict[str, Any], settings: Settings
) -> None:
    tenant: TenantHandle = stack["tenant"]
    base: str = stack["base"]
    async with httpx.AsyncClient(base_url=base) as client:
        created = await client.post(
            "/api/v1/storage/objects",
            headers=tenant.pk,
            json={"content_type": "text/plain", "content_length": 5},
        )
        assert created.status_code == 201
        upload_url = created.json()["upload"]["url"]
        object_id = created.json()["object_id"]
    stranger: Page = stack["stranger"]
    await stranger.evaluate(_configure(stranger, base, tenant))
    await stranger.evaluate(f"UPLOAD_URL = {orjson.dumps(upload_url).decode()}")
    outcome = await stranger.evaluate(
        """
        (async () => {
          const out = {};
          const attempt = async (name, promise) => {
            try { const r = await promise; out[name] = { status: r.status }; }
            catch (e) { out[name] = { error: e.name }; }
          };
          await attempt("draft", fetch(BASE + "/api/v1/drafts", { method: "POST",
            headers: { "X-App-ID": APP_ID, Authorization: `Bearer ${KEY}`,
                       "Content-Type": "application/json" },
            body: JSON.stringify({ content: "from a stranger" }) }));
          await attempt("simple", fetch(BASE + "/api/v1/drafts", { method: "POST",
            body: "content=from a stranger" }));
          await attempt("upload", fetch(UPLOAD_URL, { method: "PUT",
            headers: { "Content-Type": "text/plain" }, body: "hello" }));
          await attempt("subscribe", fetch(BASE + "/api/v1/web/subscribe", { method: "POST",
            headers: { "X-App-ID": APP_ID, Authorization: `Bearer ${KEY}`,
                       "Content-Type": "application/json" }, body: "{}" }));
          return out;
        })()
        """
    )
    assert outcome == {
        "draft": {"error": "TypeError"},
        "simple": {"error": "TypeError"},
        "upload": {"error": "TypeError"},
        "subscribe": {"error": "TypeError"},
    }
    assert (await sql(settings, "SELECT count(*) FROM drafts"))[0][0] == 0
    assert (await sql(settings, "SELECT count(*) FROM webpush_subscriptions"))[0][0] == 0
    rows = await sql(
        settings, "SELECT status FROM stored_files WHERE object_id = :id", id=object_id
    )
    assert rows == [("pending",)]
