"""Local-storage throughput: a 50 MiB object uploaded and downloaded through the API's signed
URLs (a real uvicorn server on 127.0.0.1) vs a plain file copy on the same disk, same run;
plus the HTTP transport's ceiling (the same uvicorn serving a bare ASGI app).

    .venv/bin/python -m bench.storage_throughput [--mib 50] [--rounds 3]

Uses a throwaway SQLite database and storage directory; prints MiB/s and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from stateless.config import Settings
from stateless.kit.crypto.sealing import PrivacyKit
from stateless.kit.data.db import build_engine, build_sessionmaker, session_scope
from stateless.migrations.runner import upgrade
from stateless.tenants.service import TenantService

SECRET = "bench-secret-key-with-more-than-32-characters!!"
SALT = "bench-affiliate-salt-with-more-than-32-chars!!"
MIB = 1024 * 1024


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Transport ceiling: the same uvicorn, an ASGI app that only sinks or sources bytes."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["method"] == "PUT":
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})
        return
    total = int(scope["query_string"] or b"0")
    chunk = b"x" * MIB
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(total).encode())],
        }
    )
    offset = 0
    while True:
        piece = chunk[: max(0, min(MIB, total - offset))]
        offset += len(piece)
        more = offset < total
        await send({"type": "http.response.body", "body": piece, "more_body": more})
        if not more:
            return


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _tenant(settings: Settings) -> dict[str, str]:
    engine = build_engine(settings)
    try:
        async with session_scope(build_sessionmaker(engine)) as session:
            keys = await TenantService(session, PrivacyKit(settings.secret_key)).create("bench")
    finally:
        await engine.dispose()
    return {"X-App-ID": keys.app_id, "Authorization": f"Bearer {keys.publishable_key}"}


def _copy_mib_s(source: Path, target_dir: Path, size: int) -> float:
    target = target_dir / "copy.bin"
    started = time.perf_counter()
    shutil.copyfile(source, target)
    elapsed = time.perf_counter() - started
    target.unlink()
    return size / MIB / elapsed


async def _round(
    client: httpx.AsyncClient, base: str, headers: dict[str, str], data: bytes
) -> tuple[float, float]:
    created = (
        await client.post(
            f"{base}/api/v1/storage/objects",
            headers=headers,
            json={"content_type": "application/octet-stream", "content_length": len(data)},
        )
    ).json()
    upload = created["upload"]
    started = time.perf_counter()
    put = await client.put(upload["url"], headers=upload["headers"], content=data)
    up = time.perf_counter() - started
    put.raise_for_status()
    meta = (
        await client.get(f"{base}/api/v1/storage/objects/{created['object_id']}", headers=headers)
    ).json()
    received = 0
    started = time.perf_counter()
    async with client.stream("GET", meta["download_url"]) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            received += len(chunk)
    down = time.perf_counter() - started
    assert received == len(data), (received, len(data))
    await client.delete(f"{base}/api/v1/storage/objects/{created['object_id']}", headers=headers)
    return len(data) / MIB / up, len(data) / MIB / down


def _serve(target: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
    )


async def _wait_ready(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(100):
        try:
            await client.get(url)
            return
        except httpx.TransportError:
            await asyncio.sleep(0.1)


async def _bare_round(client: httpx.AsyncClient, base: str, data: bytes) -> tuple[float, float]:
    started = time.perf_counter()
    (await client.put(f"{base}/", content=data)).raise_for_status()
    up = time.perf_counter() - started
    received = 0
    started = time.perf_counter()
    async with client.stream("GET", f"{base}/?{len(data)}") as response:
        async for chunk in response.aiter_raw():
            received += len(chunk)
    down = time.perf_counter() - started
    assert received == len(data)
    return len(data) / MIB / up, len(data) / MIB / down


async def main(mib: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="stateless-bench-storage-"))
    storage_dir = work / "storage"
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": f"sqlite+aiosqlite:///{work / 'bench.db'}",
        "SECRET_KEY": SECRET,
        "AFFILIATE_SALT": SALT,
        "STORAGE_LOCAL_PATH": str(storage_dir),
        "S3_BUCKET_NAME": "",
        "REDIS_URL": "",
        "RUN_BACKGROUND_JOBS": "false",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_DEFAULT": "100000/minute",
    }
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=env["DATABASE_URL"],
        secret_key=SECRET,
        affiliate_salt=SALT,
        storage_local_path=storage_dir,
    )
    await asyncio.to_thread(upgrade, settings)
    headers = await _tenant(settings)
    port, bare_port = _free_port(), _free_port()
    base = f"http://127.0.0.1:{port}"
    bare_base = f"http://127.0.0.1:{bare_port}"
    server = _serve("stateless.main:app", port, env)
    bare = _serve("bench.storage_throughput:bare_app", bare_port, env)
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            await _wait_ready(client, f"{base}/health/ready")
            await _wait_ready(client, f"{bare_base}/?0")
            data = os.urandom(mib * MIB)
            source = work / "source.bin"
            source.write_bytes(data)
            ups, downs, copies, bare_ups, bare_downs = [], [], [], [], []
            await _round(client, base, headers, data)  # warm-up
            await _bare_round(client, bare_base, data)
            for _ in range(rounds):
                up, down = await _round(client, base, headers, data)
                ups.append(up)
                downs.append(down)
                copies.append(_copy_mib_s(source, work, len(data)))
                up, down = await _bare_round(client, bare_base, data)
                bare_ups.append(up)
                bare_downs.append(down)
        up, down, copy, bare_up, bare_down = (
            statistics.median(x) for x in (ups, downs, copies, bare_ups, bare_downs)
        )
        print(f"object size            {mib} MiB, {rounds} rounds (median), same disk: {work}")
        print(f"upload via signed URL  {up:8.1f} MiB/s")
        print(f"download via signed URL{down:8.1f} MiB/s")
        print(f"plain file copy        {copy:8.1f} MiB/s")
        print(f"upload / copy          {up / copy:8.3f}")
        print(f"download / copy        {down / copy:8.3f}")
        print("transport ceiling (same uvicorn, bare ASGI app that only sinks/sources bytes):")
        print(f"  bare upload {bare_up:8.1f} MiB/s  -> ours / bare {up / bare_up:6.3f}")
        print(f"  bare download {bare_down:6.1f} MiB/s  -> ours / bare {down / bare_down:6.3f}")
    finally:
        for process in (server, bare):
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.rounds))
