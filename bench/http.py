"""`make bench`: our API (one uvicorn worker, Postgres + Redis) against a bare FastAPI baseline,
driven by the same load generator at 64 connections, one line per scenario:

    <scenario>: ours <N> req/s, baseline <M> req/s, ratio <R>, p99 <X> ms

Everything runs on 127.0.0.1 in a throwaway Postgres database and Redis key prefix; it stops
by itself. BENCH_DATABASE_URL / BENCH_REDIS_URL choose the servers (default: local ports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx

from bench.loadgen import build_request, run_load

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def sendgrid_peer(port: int) -> asyncio.Server:
    """Answers every POST like SendGrid v3 does on success: 202 with an X-Message-Id."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 202 Accepted\r\nX-Message-Id: "
                    + secrets.token_hex(8).encode()
                    + b"\r\nContent-Length: 0\r\n\r\n"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def scenarios(
    app_id: str, pk: str, sk: str, draft_id: str, host: str
) -> dict[str, Callable[[int], bytes]]:
    json_h = {"Content-Type": "application/json", "X-App-ID": app_id}
    pk_h = {**json_h, "Authorization": f"Bearer {pk}"}
    sk_h = {**json_h, "Authorization": f"Bearer {sk}"}
    tokens = [secrets.token_hex(32) for _ in range(256)]

    def body(obj: object) -> bytes:
        return json.dumps(obj).encode()

    return {
        "health": lambda i: build_request("GET", "/health", host, {"X-App-ID": app_id}),
        "affiliate-generate": lambda i: build_request(
            "POST", "/api/v1/affiliate/generate", host, pk_h, body({"code_id": f"user-{i % 5000}"})
        ),
        "register-token": lambda i: build_request(
            "POST",
            "/api/v1/ios/register-token",
            host,
            pk_h,
            body({"token": tokens[i % len(tokens)], "device_id": f"device-{i % 20000}"}),
        ),
        "bots-execute-async": lambda i: build_request(
            "POST",
            "/api/v1/bots/execute",
            host,
            sk_h,
            body(
                {
                    "task_type": "email",
                    "mode": "async",
                    "context": {"to": "bench@example.com", "subject": f"bench {i}", "text": "hi"},
                }
            ),
        ),
        "drafts-read": lambda i: build_request("GET", f"/api/v1/drafts/{draft_id}", host, pk_h),
    }


async def main(
    seconds: float, connections: int, only: list[str] | None, profile: str | None = None
) -> None:
    name = f"stateless_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base, _, _ = ADMIN_URL.rpartition("/")
    ours_port, baseline_port, peer_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "AFFILIATE_SALT": secrets.token_urlsafe(48),
        "DATABASE_URL": f"{base}/{name}",
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "SENDGRID_API_KEY": "SG.bench",
        "SENDGRID_API_BASE_URL": f"http://127.0.0.1:{peer_port}",
        "RUN_BACKGROUND_JOBS": "false",
        "LOG_FORMAT": "json",
        "PORT": str(ours_port),
        "HOST": "127.0.0.1",
        "STORAGE_LOCAL_PATH": f"/tmp/{name}",
    }
    stateless = str(BIN / "stateless")
    peer = await sendgrid_peer(peer_port)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([stateless, "migrate"], env=env, check=True, capture_output=True)
        created = subprocess.run(
            [stateless, "tenants", "create", "bench", "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        keys = json.loads(created.stdout)
        subprocess.run(
            [
                stateless,
                "tenants",
                "configure",
                "bench",
                "--rate-limit",
                "default=100000000/minute",
                "--rate-limit",
                "health=100000000/minute",
                "--rate-limit",
                "bots.execute=100000000/minute",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        devnull = subprocess.DEVNULL
        serve_cmd = [stateless, "serve"]
        if profile:  # sample the server with pyinstrument; the profile is written at exit
            serve_cmd = [
                sys.executable,
                "-m",
                "pyinstrument",
                "--interval",
                "0.001",
                "-r",
                "text",
                "--show-all",
                "-o",
                profile,
                "-m",
                "stateless.cli",
                "serve",
            ]
        procs.append(subprocess.Popen(serve_cmd, env=env, stdout=devnull, stderr=devnull))
        procs.append(
            subprocess.Popen([stateless, "worker"], env=env, stdout=devnull, stderr=devnull)
        )
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "uvicorn"),
                    "bench.baseline_app:app",
                    "--port",
                    str(baseline_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                cwd=Path(__file__).resolve().parents[1],
                stdout=devnull,
                stderr=devnull,
            )
        )
        wait_ready(f"http://127.0.0.1:{ours_port}/health/ready")
        wait_ready(f"http://127.0.0.1:{baseline_port}/health")
        draft = httpx.post(
            f"http://127.0.0.1:{ours_port}/api/v1/drafts",
            headers={"X-App-ID": "bench", "Authorization": f"Bearer {keys['publishable_key']}"},
            json={"content": "benchmark draft content"},
        ).json()["id"]
        table = scenarios("bench", keys["publishable_key"], keys["secret_key"], draft, "127.0.0.1")
        for scenario, factory in table.items():
            if only and scenario not in only:
                continue
            ours = await run_load(
                "127.0.0.1", ours_port, factory, connections=connections, seconds=seconds
            )
            baseline = await run_load(
                "127.0.0.1", baseline_port, factory, connections=connections, seconds=seconds
            )
            bad = {s: n for s, n in ours.statuses.items() if s >= 400}
            note = f"  (non-2xx: {bad})" if bad else ""
            print(
                f"{scenario}: ours {ours.rate:.0f} req/s, baseline {baseline.rate:.0f} req/s, "
                f"ratio {ours.rate / baseline.rate:.2f}, p99 {ours.percentile_ms(0.99):.1f} ms{note}",
                flush=True,
            )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        peer.close()
        admin = await asyncpg.connect(ADMIN_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--profile", help="write a pyinstrument text profile of our server here")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.connections, args.only, args.profile))
