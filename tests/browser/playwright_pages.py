"""The one browser driver of the suite: headless Chromium for tests that look at the app as a
person would (the /docs pages, a page's `fetch` under CORS).

`open_browser` launches the system Chromium (Debian package `chromium`; Playwright's own browser
download is never used) through Playwright's driver with a fresh profile. By default it gives
the browser no network beyond the loopback hosts: every request to any other host is aborted
and recorded in `BrowserSession.blocked`, so a test can assert a page needs nothing from outside.
Tests of CORS pass `allowed_hosts=None`: while Playwright routes requests it answers CORS
preflights itself (allow-all), so only an unrouted browser shows what the server's CORS allows.
Without Chromium the test fails (never skips) and says how to install it. `running_server`
starts a real `stateless serve` on 127.0.0.1 for it to load.

    async with running_server(tmp_path) as base_url, open_browser(tmp_path) as browser:
        page = await browser.new_page()
        await page.goto(f"{base_url}/docs")
        await browser.screenshot(page, "docs")
        assert browser.blocked == []
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, Request, Route, async_playwright

from tests.ops.procs import STATELESS, base_env, free_port, run_cli, stop, wait_ready

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# Headless, no sandbox (CI runs as root), and nothing Chromium would fetch on its own.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
INSTALL_HINT = (
    "headless Chromium is required for the browser tests and was not found. "
    "Install it with `apt-get install chromium` (Debian/Ubuntu; .ci/run does this), "
    "or point CHROMIUM=/path/to/chrome at another Chromium or Chrome build."
)


def chromium_executable() -> str:
    """The Chromium binary to drive; fails the calling test with install advice when absent."""
    configured = os.environ.get("CHROMIUM")
    candidates = [configured] if configured else [*CHROMIUM_CANDIDATES, shutil.which("chromium")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(INSTALL_HINT, pytrace=False)


@dataclass
class BrowserSession:
    """One Chromium profile: pages, what the pages asked for, and where screenshots go."""

    context: BrowserContext
    artifacts: Path
    requested: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    async def new_page(self) -> Page:
        page = await self.context.new_page()
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        return page

    async def screenshot(self, page: Page, name: str) -> Path:
        """A full-page PNG under the test's tmp dir (kept by pytest for the last runs)."""
        path = self.artifacts / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


@asynccontextmanager
async def open_browser(
    tmp_path: Path, allowed_hosts: Sequence[str] | None = LOCAL_HOSTS
) -> AsyncIterator[BrowserSession]:
    """Headless Chromium with a fresh profile in tmp_path; only `allowed_hosts` are reachable
    (None: no routing at all, so Chromium itself enforces CORS; see the module docstring)."""
    executable = chromium_executable()
    artifacts = tmp_path / "browser"
    artifacts.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": 1280, "height": 900},
        )
        session = BrowserSession(context=context, artifacts=artifacts)

        async def guard(route: Route, request: Request) -> None:
            session.requested.append(request.url)
            parts = urlsplit(request.url)
            local = parts.scheme in ("data", "blob", "about") or parts.hostname in allowed_hosts
            if local:
                await route.continue_()
            else:
                session.blocked.append(request.url)
                await route.abort("blockedbyclient")

        if allowed_hosts is not None:
            await context.route("**/*", guard)
        try:
            yield session
        finally:
            await context.close()


@contextmanager
def running_server(tmp_path: Path, **env_overrides: str) -> Iterator[str]:
    """A migrated `stateless serve` on a free 127.0.0.1 port with its own SQLite file."""
    port = free_port()
    env = base_env(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'browser.db'}",
        STORAGE_LOCAL_PATH=str(tmp_path / "storage"),
        RUN_BACKGROUND_JOBS="false",
        HOST="127.0.0.1",
        PORT=str(port),
        **env_overrides,
    )
    migrated = run_cli(["migrate"], env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([STATELESS, "serve"], cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            wait_ready(base_url, proc)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            finally:
                stop(proc)
