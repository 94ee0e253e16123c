"""The loop-stall detector the fuzzers rely on (bench/stallwatch.py) sees a request that holds
the event loop, by CPU or by a blocking call, and not one that awaits."""

from __future__ import annotations

import asyncio
import io
import json
import time
from contextlib import redirect_stderr
from typing import Any

import httpx
import pytest
from bench.stallwatch import StallWatch


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/cpu":
        end = time.thread_time() + 0.4  # 0.4 s of CPU, however busy the machine is
        while time.thread_time() < end:
            pass
    elif scope["path"] == "/blocking":
        time.sleep(0.4)
    else:
        await asyncio.sleep(0.4)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("path", "stalls"), [("/cpu", True), ("/blocking", True), ("/await", False)]
)
async def test_stallwatch_reports_requests_that_hold_the_loop(path: str, stalls: bool) -> None:
    watch = StallWatch(_app, threshold_seconds=0.25)
    transport = httpx.ASGITransport(app=watch)
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/warm-up-not-a-stall")
            await asyncio.sleep(0.02)
            assert (await client.get(path)).status_code == 204
            await asyncio.sleep(0.02)
    assert watch._ticker is not None
    watch._ticker.cancel()
    lines = [json.loads(line) for line in stderr.getvalue().splitlines() if "loop_stall" in line]
    if stalls:
        assert lines and lines[0]["held_ms"] > 250
        assert any(f"GET {path}" in line["requests"] for line in lines)
    else:
        assert lines == []
