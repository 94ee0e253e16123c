"""/docs and /redoc work with no network but the API itself (no CDN, fonts or outside favicon)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.browser.playwright_pages import chromium_executable, open_browser, running_server
from tests.conftest import Client

_URL_IN_HTML = re.compile(r"""(?:src|href|spec-url|url)\s*[:=]\s*["']([^"']+)["']""", re.I)
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
_ABSOLUTE = re.compile(r"(?i)\b(?:https?:)?//[a-z0-9.-]+")


async def test_docs_html_names_no_outside_host(client: Client) -> None:
    for path in ("/docs", "/redoc"):
        response = await client.get(path)
        assert response.status_code == 200
        html = response.text
        assert _ABSOLUTE.findall(html) == [], f"{path} refers to an outside host"
        referenced = _URL_IN_HTML.findall(html)
        assert referenced, f"{path} loads nothing?"
        for url in referenced:
            assert urlsplit(url).netloc == "", url
            asset = await client.get(url)
            assert asset.status_code == 200, (path, url)


def _operation_count(schema: dict[str, object]) -> int:
    paths = schema["paths"]
    assert isinstance(paths, dict)
    methods = {"get", "post", "put", "patch", "delete"}
    return sum(1 for item in paths.values() for method in item if method in methods)


async def test_swagger_ui_and_redoc_render_in_headless_chromium(tmp_path: Path) -> None:
    """A real server on 127.0.0.1, a real browser that can reach nothing else."""
    chromium_executable()  # fails at once, saying how to install it, when there is none
    with running_server(tmp_path) as base_url:
        schema = httpx.get(f"{base_url}/openapi.json").json()
        operations = _operation_count(schema)
        assert operations > 20
        async with open_browser(tmp_path) as browser:
            page = await browser.new_page()
            await page.goto(f"{base_url}/docs")
            await page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            rendered = await page.locator(".opblock").count()
            paths = await page.locator(".opblock-summary-path").all_inner_texts()
            shot = await browser.screenshot(page, "swagger-ui")
            assert rendered == operations, (rendered, operations)
            assert any("/api/v1/drafts" in p for p in paths)
            assert "stateless-backend" in await page.locator(".info .title").inner_text()

            redoc = await browser.new_page()
            await redoc.goto(f"{base_url}/redoc")
            await redoc.wait_for_selector("[data-section-id^='operation/']", timeout=30_000)
            sections = redoc.locator("[data-section-id^='operation/']")
            documented = len(
                {
                    await sections.nth(i).get_attribute("data-section-id")
                    for i in range(await sections.count())
                }
            )
            redoc_shot = await browser.screenshot(redoc, "redoc")
            assert documented == operations, (documented, operations)

            # ReDoc's sidebar shows Redocly's logo from their CDN and removes the image when it
            # cannot load (offline it simply is not shown); nothing else may leave the machine.
            assert set(browser.blocked) <= {REDOCLY_LOGO}, browser.blocked
            local = [url for url in browser.requested if url != REDOCLY_LOGO]
            assert all(urlsplit(url).hostname == "127.0.0.1" for url in local), local
            errors = [e for e in browser.console_errors if "ERR_BLOCKED_BY_CLIENT" not in e]
            assert errors == [], errors
        assert shot.stat().st_size > 10_000 and redoc_shot.stat().st_size > 10_000
