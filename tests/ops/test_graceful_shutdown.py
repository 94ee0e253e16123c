"""SIGTERM on a real `stateless serve` / `stateless worker` process: nothing in flight is dropped.

The server is a subprocess on a free port with its own SQLite database. Slow uploads (draft
bodies streamed over ~2 s) and a stream of quick requests are in flight when SIGTERM arrives;
each must get a complete 2xx answer, every created draft must be in the database afterwards,
and the process must exit 0 within GRACEFUL_TIMEOUT_SECONDS plus a margin.

"Before SIGTERM" means the request's last byte had been written to the socket when the signal
was sent (httpx's trace events say when); a request still connecting at that moment may be
refused, but never answered with anything but a complete 201.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.ops.procs import STATELESS, base_env, free_port, run_cli, stop, wait_ready

GRACEFUL_TIMEOUT_SECONDS = 15
SLOW_REQUESTS = 16
CHUNKS = 20
CHUNK_DELAY_SECONDS = 0.1  # each slow body takes ~2 s to arrive


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    env = base_env(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}",
        STORAGE_LOCAL_PATH=str(tmp_path / "storage"),
        GRACEFUL_TIMEOUT_SECONDS=str(GRACEFUL_TIMEOUT_SECONDS),
        RUN_BACKGROUND_JOBS="true",  # the cleanup loop must stop cleanly too
        CLEANUP_INTERVAL_SECONDS="0.5",
    )
    migrated = run_cli(["migrate"], env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    return env


def _create_tenant(env: dict[str, str], cwd: Path, app_id: str) -> dict[str, str]:
    created = run_cli(["tenants", "create", app_id, "--json"], env, cwd)
    assert created.returncode == 0, created.stderr
    keys = json.loads(created.stdout)
    return {"X-App-ID": app_id, "Authorization": f"Bearer {keys['publishable_key']}"}


async def _slow_body(marker: str) -> AsyncIterator[bytes]:
    yield b'{"content": "' + marker.encode()
    for _ in range(CHUNKS):
        await asyncio.sleep(CHUNK_DELAY_SECONDS)
        yield b"x" * 4096
    yield b'"}'


class Sent:
    """When the request's last byte was written (monotonic), via httpx's trace extension."""

    def __init__(self) -> None:
        self.at: float | None = None

    async def trace(self, event: str, _info: dict[str, object]) -> None:
        if event == "http11.send_request_body.complete":
            self.at = time.monotonic()


async def _post_draft(
    base_url: str, headers: dict[str, str], body: object, sent: Sent | None = None
) -> httpx.Response:
    # a fresh connection per request: no idle keep-alive connection to race the shutdown
    extensions = {"trace": (sent or Sent()).trace}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        if isinstance(body, str):
            return await client.post(
                "/api/v1/drafts", headers=headers, json={"content": body}, extensions=extensions
            )
        return await client.post(
            "/api/v1/drafts",
            headers={**headers, "Content-Type": "application/json"},
            content=body,  # type: ignore[arg-type]
            extensions=extensions,
        )


async def test_sigterm_finishes_in_flight_requests_and_exits_zero(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    headers = _create_tenant(server_env, tmp_path, "shutdown-app")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [STATELESS, "serve", "--port", str(port)],
            cwd=tmp_path,
            env=server_env,
            stdout=log,
            stderr=log,
        )
        try:
            await asyncio.to_thread(wait_ready, base_url, proc)
            slow = [
                asyncio.create_task(_post_draft(base_url, headers, _slow_body(f"slow-{i}-")))
                for i in range(SLOW_REQUESTS)
            ]
            quick: list[asyncio.Task[httpx.Response]] = []
            quick_sent: list[Sent] = []
            terminated = asyncio.Event()

            async def quick_traffic() -> None:
                n = 0
                while not terminated.is_set():
                    quick_sent.append(Sent())
                    quick.append(
                        asyncio.create_task(
                            _post_draft(base_url, headers, f"quick-{n}", quick_sent[-1])
                        )
                    )
                    n += 1
                    await asyncio.sleep(0.02)

            traffic = asyncio.create_task(quick_traffic())
            await asyncio.sleep(0.8)  # every slow body is now half sent
            assert proc.poll() is None
            sent_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            terminated.set()
            await traffic

            slow_results = await asyncio.gather(*slow, return_exceptions=True)
            quick_results = await asyncio.gather(*quick, return_exceptions=True)
            code = await asyncio.to_thread(proc.wait, GRACEFUL_TIMEOUT_SECONDS + 10)
            elapsed = time.monotonic() - sent_at
        finally:
            stop(proc)

    assert code == 0, log_path.read_text()[-3000:]
    assert elapsed < GRACEFUL_TIMEOUT_SECONDS + 10
    created: list[str] = []
    sent_before = [True] * SLOW_REQUESTS + [
        sent.at is not None and sent.at < sent_at for sent in quick_sent
    ]
    for before, result in zip(sent_before, [*slow_results, *quick_results], strict=True):
        if isinstance(result, httpx.Response):
            assert result.status_code == 201, result.text
            created.append(result.json()["id"])
            continue
        # only a request still on its way when SIGTERM was sent may be refused, and only
        # at the connection level (the server had stopped listening)
        assert not before, f"a request sent before SIGTERM failed: {result!r}"
        assert isinstance(result, httpx.TransportError), repr(result)
    assert len(created) >= SLOW_REQUESTS + sum(sent_before[SLOW_REQUESTS:])
    slow_sizes = [r.json()["size_bytes"] for r in slow_results if isinstance(r, httpx.Response)]
    assert all(size > CHUNKS * 4096 for size in slow_sizes), "a slow body was cut short"

    # nothing dropped: every answered draft is in the database the process left behind
    db = sqlite3.connect(tmp_path / "ops.db")
    try:
        stored = {row[0] for row in db.execute("SELECT draft_id FROM drafts")}
    finally:
        db.close()
    assert set(created) <= stored
    assert len(stored) == len(created)

    output = log_path.read_text()
    assert "Waiting for connections to close" in output or "Shutting down" in output
    assert "Application shutdown complete" in output  # lifespan ran: loops stopped, pools closed


def test_sigterm_stops_the_worker_cleanly(tmp_path: Path, server_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [STATELESS, "worker"],
        cwd=tmp_path,
        env=server_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        banner = b""
        while b"worker running" not in banner and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            banner += line
        assert b"worker running" in banner, banner.decode(errors="replace")
        # it yields the CPU to the web process: ten steps below the niceness it started with
        assert psutil.Process(proc.pid).nice() == min(19, os.nice(0) + 10)
        time.sleep(1.2)  # a couple of cleanup ticks at 0.5 s
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out.decode(errors="replace")
        assert time.monotonic() - started < 12  # the loop stops after its current unit
    finally:
        stop(proc)


async def test_web_concurrency_workers_serve_and_stop_cleanly(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    headers = _create_tenant(server_env, tmp_path, "multi-app")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**server_env, "WEB_CONCURRENCY": "2", "PORT": str(port), "HOST": "127.0.0.1"}
    log_path = tmp_path / "multi.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([STATELESS, "serve"], cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            await asyncio.to_thread(wait_ready, base_url, proc, 60)
            results = await asyncio.gather(
                *(_post_draft(base_url, headers, f"multi-{i}") for i in range(20))
            )
            assert [r.status_code for r in results] == [201] * 20
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, GRACEFUL_TIMEOUT_SECONDS + 10)
        finally:
            stop(proc)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    # two uvicorn worker processes, each started and shut down its app (loops stopped, pools closed)
    assert output.count("Application startup complete") == 2
    assert output.count("Application shutdown complete") == 2
    assert output.count("Finished server process") == 2
