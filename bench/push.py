"""`python -m bench.push`: POST /api/v1/ios/push with `all` against the local APNs peer.

Pushes to 1,000 and then 10,000 registered devices (each size in a fresh process, so peak RSS
is per size) through the real app (ASGI, SQLite, keyset batches, HTTP/2 over TLS to the peer
running in its own process) and prints pushes/s, CPU per push and RSS. RSS should stay flat in
the number of tokens: the push streams batches of 500 and never loads every token at once.

    push 1000 tokens:  2345 pushes/s (wall), 0.31 ms CPU/push, RSS 95 MB -> peak 97 MB (+2 MB)
    ...

Target: >= 2,000 pushes/s on one process. Options: --sizes 1000 10000, --loop asyncio|uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUNDLE_ID = "com.example.bench"
TEAM_ID = "BENCHTEAM1"
KEY_ID = "BENCHKEY01"


def _new_key(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private_file = directory / "AuthKey.p8"
    public_file = directory / "AuthKey.pub.pem"
    private_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_file.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_file, public_file


def _start_peer(directory: Path, public_file: Path) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.peers.apns",
            "--dir",
            str(directory / "peer"),
            "--team",
            TEAM_ID,
            "--kid",
            KEY_ID,
            "--public-key",
            str(public_file),
            "--topic",
            BUNDLE_ID,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    if not ready or ready[0] != "ready":
        proc.kill()
        raise SystemExit("the APNs peer did not start")
    return proc, ready[1], ready[2]


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import psutil
    from asgi_lifespan import LifespanManager

    from stateless.config import Settings
    from stateless.ios.repository import DeviceTokenRepository
    from stateless.ios.service import DEVICE_ID_PURPOSE, TOKEN_PURPOSE
    from stateless.kit.crypto import PrivacyKit
    from stateless.kit.db import build_engine, build_sessionmaker, session_scope, utcnow
    from stateless.main import create_app
    from stateless.migrations.runner import upgrade
    from stateless.tenants.schemas import VerifiedAppId
    from stateless.tenants.service import ConfigureRequest, TenantService

    workdir = Path(args.workdir)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        database_url=f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        secret_key="bench-secret-key-with-more-than-32-characters",
        affiliate_salt="bench-affiliate-salt-more-than-32-characters",
        run_background_jobs=False,
        log_level="WARNING",
        apns_production_url=args.peer_url,
        apns_sandbox_url=args.peer_url,
        apns_ca_file=Path(args.ca_file),
    )
    await asyncio.to_thread(upgrade, settings)
    kit = PrivacyKit(settings.secret_key)
    engine = build_engine(settings)
    async with session_scope(build_sessionmaker(engine)) as session:
        service = TenantService(session, kit)
        keys = await service.create("bench")
        await service.configure(
            "bench",
            ConfigureRequest(
                bundle_id=BUNDLE_ID,
                apns_team_id=TEAM_ID,
                apns_key_id=KEY_ID,
                apns_key_p8=Path(args.key_file).read_text(),
                rate_limits=["ios.push=1000/minute"],
            ),
        )
    # Fill the table with the same single-statement upsert register-token uses.
    expires = utcnow() + timedelta(days=30)
    async with session_scope(build_sessionmaker(engine)) as session:
        repo = DeviceTokenRepository(session, VerifiedAppId("bench"))
        for i in range(args.tokens):
            await repo.upsert(
                kit.keyed_hash(DEVICE_ID_PURPOSE, "bench", f"device-{i}"),
                kit.encrypt_text(TOKEN_PURPOSE, "bench", f"{i:064x}"),
                "production",
                None,
                expires,
            )
    await engine.dispose()

    process = psutil.Process()
    app = create_app(settings)
    headers = {"X-App-ID": "bench", "Authorization": f"Bearer {keys.secret_key}"}
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://bench",
            timeout=600,
        ) as client,
    ):
        # Warm up: TLS handshake, HTTP/2 connection, provider token.
        warm = await client.post(
            "/api/v1/ios/push", headers=headers, json={"device_ids": ["device-0"], "badge": 1}
        )
        assert warm.status_code == 200 and warm.json()["sent"] == 1, warm.text
        rss_before = process.memory_info().rss
        peak = rss_before
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, process.memory_info().rss)
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        cpu_start = time.process_time()
        start = time.perf_counter()
        response = await client.post(
            "/api/v1/ios/push",
            headers=headers,
            json={"all": True, "alert": {"title": "Bench", "body": "Hello"}, "badge": 1},
        )
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        done.set()
        await sampler
        peak = max(peak, process.memory_info().rss)
    body = response.json()
    assert response.status_code == 200 and body["sent"] == args.tokens, response.text[:300]
    return {
        "tokens": args.tokens,
        "seconds": elapsed,
        "pushes_per_second": args.tokens / elapsed,
        "cpu_ms_per_push": cpu * 1000 / args.tokens,
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_mb": peak / 2**20,
        "rss_growth_mb": (peak - rss_before) / 2**20,
        "loop": args.loop,
    }


def _run_child(args: argparse.Namespace) -> None:
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(_child(args))
    else:
        result = asyncio.run(_child(args))
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=10000, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--peer-url", help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    parser.add_argument("--key-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_child(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        directory = Path(tmp)
        private_file, public_file = _new_key(directory)
        peer, url, ca_file = _start_peer(directory, public_file)
        results = []
        try:
            for size in args.sizes:
                workdir = directory / f"run-{size}"
                workdir.mkdir()
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.push",
                        "--child",
                        f"--tokens={size}",
                        f"--workdir={workdir}",
                        f"--peer-url={url}",
                        f"--ca-file={ca_file}",
                        f"--key-file={private_file}",
                        f"--loop={args.loop}",
                    ],
                    check=True,
                    capture_output=True,
                    cwd=ROOT,
                    text=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(result)
                print(
                    f"push {size} tokens ({args.loop}): "
                    f"{result['pushes_per_second']:.0f} pushes/s (wall), "
                    f"{result['cpu_ms_per_push']:.3f} ms CPU/push, "
                    f"RSS {result['rss_before_mb']:.0f} MB -> peak {result['rss_peak_mb']:.0f} MB "
                    f"(+{result['rss_growth_mb']:.1f} MB)",
                    flush=True,
                )
        finally:
            peer.terminate()
            peer.wait(10)
    if len(results) >= 2:
        small, large = results[0], results[-1]
        ratio = large["tokens"] / small["tokens"]
        print(
            f"RSS growth for {ratio:.0f}x the tokens: "
            f"{small['rss_growth_mb']:.1f} MB -> {large['rss_growth_mb']:.1f} MB; "
            f"peak {small['rss_peak_mb']:.0f} MB -> {large['rss_peak_mb']:.0f} MB"
        )
        print(
            f"target >= 2000 pushes/s: {'met' if large['pushes_per_second'] >= 2000 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
