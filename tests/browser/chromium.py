"""Headless Chromium driven over the DevTools protocol (a WebSocket, `websockets`), no WebDriver.

`Browser` starts Debian's `chromium` with a fresh profile, opens pages and evaluates JavaScript
in them (promises awaited, results returned by value). Without Chromium the tests fail and say
how to install it: a browser test that silently skips proves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.browser.playwright_pages import CHROMIUM_ARGS, INSTALL_HINT, chromium_executable

FLAGS = (*CHROMIUM_ARGS, "--disable-dev-shm-usage", "--remote-debugging-port=0")


class JavaScriptError(AssertionError):
    pass


class Page:
    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id

    async def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """Run `expression` in the page; a promise is awaited; the value comes back as JSON."""
        reply = await self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session_id=self.session_id,
            timeout=timeout,
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise JavaScriptError(str(text))
        return reply["result"].get("value")


class Browser:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self._ids = itertools.count(1)

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        await self.connection.send(orjson.dumps(message).decode())
        async with asyncio.timeout(timeout):
            while True:  # events arrive in between; one call at a time, so ids line up
                reply = orjson.loads(await self.connection.recv())
                if reply.get("id") == message_id:
                    if "error" in reply:
                        raise JavaScriptError(f"{method}: {reply['error']}")
                    result: dict[str, Any] = reply.get("result", {})
                    return result

    async def open(self, url: str) -> Page:
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        await self.call("Page.navigate", {"url": url}, session_id=page.session_id)
        deadline = time.monotonic() + 30
        while await page.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise AssertionError(f"page {url} did not load")
            await asyncio.sleep(0.05)
        return page


async def _devtools_url(profile: Path, proc: subprocess.Popen[bytes]) -> str:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"chromium exited with {proc.returncode}; {INSTALL_HINT}")
        if marker.exists():
            lines = marker.read_text().split()
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.05)
    raise AssertionError("chromium did not open its DevTools port within 30 s")


@contextlib.asynccontextmanager
async def launch() -> AsyncIterator[Browser]:
    binary = chromium_executable()
    # Chromium helpers may still be flushing the profile as it exits: cleanup is best effort.
    with tempfile.TemporaryDirectory(
        prefix="stateless-chromium-", ignore_cleanup_errors=True
    ) as profile_dir:
        profile = Path(profile_dir)
        proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = await _devtools_url(profile, proc)
            async with connect(url, max_size=None) as connection:
                yield Browser(connection)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
