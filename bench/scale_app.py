"""The running pieces bench.scale drives: a `stateless serve` process on a chosen database, its
tenants (made with the CLI, as bench/http.py makes them), HTTP load windows through the Python
load generator (bench/loadgen.py via bench/http.py) and a sampler of the server's RSS.

Kept apart from bench/scale.py so the sections there read as what they measure, not how the
processes are wired."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.http import (
    BIN,
    REDIS_URL,
    ROOT,
    Measured,
    Scenario,
    combine,
    free_port,
    prepare_tenant,
    run_python,
    scenarios,
    stateless,
    wait_ready,
)

SECRET_KEY = secrets.token_urlsafe(48)
HUGE_LIMITS = ("default=100000000/minute", "health=100000000/minute")


def base_env(database_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    """The server's environment, as bench/http.py sets it; one secret for the whole run so
    rows sealed by the bench (broadcast seeding) open in the server."""
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "SECRET_KEY": SECRET_KEY,
        "AFFILIATE_SALT": "bench-scale-affiliate-salt-with-more-than-32-chars",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": f"bench-scale-{uuid.uuid4().hex[:8]}",
        "RUN_BACKGROUND_JOBS": "false",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        "HOST": "127.0.0.1",
        "STORAGE_LOCAL_PATH": str(workdir / "storage"),
    }
    env.update(extra)
    return env


@dataclass
class Tenant:
    app_id: str
    pk: str
    sk: str

    def headers(self, secret: bool = False) -> dict[str, str]:
        key = self.sk if secret else self.pk
        return {"X-App-ID": self.app_id, "Authorization": f"Bearer {key}"}


def bench_tenant(env: dict[str, str]) -> Tenant:
    """Migrates and creates `bench` exactly as bench/http.py does (limits lifted, one plan)."""
    keys = prepare_tenant(env)
    return Tenant("bench", keys["publishable_key"], keys["secret_key"])


def other_tenant(env: dict[str, str], app_id: str, *configure: str) -> Tenant:
    """One more tenant through the CLI, its limits lifted; `configure` adds CLI options."""
    keys = json.loads(stateless(env, "tenants", "create", app_id, "--json"))
    args = ["tenants", "configure", app_id]
    for limit in HUGE_LIMITS:
        args += ["--rate-limit", limit]
    stateless(env, *args, *configure)
    return Tenant(app_id, keys["publishable_key"], keys["secret_key"])


class Server:
    """`stateless serve` in its own process (log in the work dir, read when it fails)."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str = "serve") -> None:
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port)}
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "stateless"), "serve"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_ready(f"{self.base}/health/ready", timeout=60)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"server did not start: {self.log_tail()}") from None
        return self

    @property
    def worker_log_path(self) -> Path:
        return self.log_path.with_suffix(".worker.log")

    def start_worker(self, **extra_env: str) -> None:
        """`stateless worker` beside the web process (RUN_BACKGROUND_JOBS off there), as
        deployed: background work, broadcasts included, in a process of its own (niced)."""
        with self.worker_log_path.open("ab") as log:
            self.worker = subprocess.Popen(
                [str(BIN / "stateless"), "worker"],
                env={**self.env, **extra_env},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def job_pid(self) -> int:
        """The process that runs background jobs: the worker when there is one."""
        return self.worker.pid if self.worker is not None else self.pid

    def log_tail(self, chars: int = 1500) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def make_draft(server: Server, tenant: Tenant) -> str:
    response = httpx.post(
        f"{server.base}/api/v1/drafts",
        headers=tenant.headers(),
        json={"content": "benchmark draft content"},
    )
    response.raise_for_status()
    return str(response.json()["id"])


TOKENS = [secrets.token_hex(32) for _ in range(256)]


def scenario_table(tenant: Tenant, draft_id: str) -> dict[str, Scenario]:
    """bench/http.py's scenarios (names and bodies) for this tenant."""
    return scenarios(tenant.app_id, tenant.pk, tenant.sk, draft_id, TOKENS)


async def measure(
    scenario: Scenario, server: Server, connections: int, seconds: float, warmup: float = 1.0
) -> Measured:
    """A warm-up window, then one measured window of `seconds`."""
    if warmup > 0:
        await run_python(scenario, server.port, connections, warmup)
    return await run_python(scenario, server.port, connections, seconds)


async def measure_while(
    scenario: Scenario,
    server: Server,
    connections: int,
    busy: Callable[[], bool],
    window: float = 1.0,
    max_seconds: float = 3600.0,
) -> Measured:
    """Load in `window`-second slices for as long as `busy()` holds (at least one slice):
    throughput during something whose length is not known in advance."""
    rounds: list[Measured] = []
    started = time.monotonic()
    while True:
        rounds.append(await run_python(scenario, server.port, connections, window))
        if not busy() or time.monotonic() - started > max_seconds:
            break
    return combine(rounds)


class RssSampler:
    """The peak RSS of one process over a window, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self.before = self.peak = int(self.process.memory_info().rss)

        async def sample() -> None:
            while True:
                self.peak = max(self.peak, int(self.process.memory_info().rss))
                await asyncio.sleep(0.05)

        self._task = asyncio.create_task(sample())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, int(self.process.memory_info().rss))

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 2**20


async def poll_until(check: Callable[[], Awaitable[bool]], timeout: float, interval: float) -> bool:
    """True once `check()` holds, False when `timeout` seconds passed first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return await check()
