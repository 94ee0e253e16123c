"""`python -m bench.webpush`: POST /api/v1/web/push with `all` against the local push service.

Pushes to 1,000, 10,000 and 100,000 subscribers (each size in a fresh process, so peak RSS is
per size) through the real app (ASGI, SQLite, keyset pages of 500 read while the previous page
is sent, RFC 8291 encryption and a VAPID JWT per message, HTTPS to the peer running in its own
process) and prints pushes/s, CPU per push and RSS. RSS should stay flat in the number of
subscribers: the push streams pages and never loads every subscription at once.

The peer verifies every VAPID header but skips decryption (`--no-decrypt`) so that its own CPU
is not what is measured; the tests decrypt every message with http_ece instead.

Target: >= 2,000 pushes/s on one process. Options: --sizes 1000 10000 100000,
--loop asyncio|uvloop, --http1 (the peer offers HTTP/1.1 only).

`push_runner()` is the hook `python -m bench.push` looks for: it then measures Web Push beside
APNs (`Scenario("webpush", "app", "ours", n)`) and prints both in one table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
CONTACT = "mailto:bench@example.com"


def _vapid_files(directory: Path) -> tuple[Path, str]:
    from stateless.webpush.crypto import VapidKeys

    keys = VapidKeys.generate()
    private_file = directory / "vapid.pem"
    private_file.write_text(keys.private_pem)
    return private_file, keys.public_key


def _start_peer(directory: Path, public_key: str, http1: bool) -> tuple[Any, str, str]:
    command = [
        sys.executable,
        "-m",
        "tests.peers.webpush",
        "--dir",
        str(directory / "peer"),
        "--vapid-key",
        public_key,
        "--no-decrypt",
    ]
    if http1:
        command.append("--http1")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    if not ready or ready[0] != "ready":
        proc.kill()
        raise SystemExit("the push service peer did not start")
    return proc, ready[1], ready[2]


def _subscription_keys() -> tuple[str, str]:
    """One browser key pair for every subscriber: the peer does not decrypt, the cost of
    encrypting is the same for any key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    b64 = base64.urlsafe_b64encode
    return b64(point).rstrip(b"=").decode(), b64(os.urandom(16)).rstrip(b"=").decode()


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import orjson
    import psutil
    from asgi_lifespan import LifespanManager

    from stateless.config import Settings
    from stateless.kit.crypto import PrivacyKit
    from stateless.kit.db import build_engine, build_sessionmaker, session_scope, utcnow
    from stateless.main import create_app
    from stateless.migrations.runner import upgrade
    from stateless.tenants.service import ConfigureRequest, TenantService, seal_secrets
    from stateless.webpush.repository import _upsert_statement
    from stateless.webpush.service import SUBSCRIBER_PURPOSE, SUBSCRIPTION_PURPOSE

    workdir = Path(args.workdir)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        database_url=f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        secret_key="bench-secret-key-with-more-than-32-characters",
        affiliate_salt="bench-affiliate-salt-more-than-32-characters",
        run_background_jobs=False,
        log_level="WARNING",
        webpush_ca_file=Path(args.ca_file),
        webpush_allow_private_networks=True,
    )
    peer = psutil.Process(args.peer_pid) if args.peer_pid else None

    def peer_cpu() -> float:
        if peer is None:
            return 0.0
        times = peer.cpu_times()
        return float(times.user + times.system)

    await asyncio.to_thread(upgrade, settings)
    kit = PrivacyKit(settings.secret_key)
    engine = build_engine(settings)
    async with session_scope(build_sessionmaker(engine)) as session:
        service = TenantService(session, kit)
        keys = await service.create("bench")
        await service.configure(
            "bench",
            ConfigureRequest(webpush_contact=CONTACT, rate_limits=["web.push=1000/minute"]),
        )
        # the VAPID pair the peer was started with, stored as --webpush-generate-keys would
        tenant = await service.repo.get("bench")
        assert tenant is not None
        config = service.read_config(tenant)
        config.webpush_public_key = args.public_key
        sealed = service.read_secrets(tenant)
        sealed.webpush_vapid_private_pem = Path(args.private_file).read_text()
        tenant.config_json = config.model_dump_json(exclude_defaults=True)
        tenant.secrets_sealed = seal_secrets(kit, "bench", sealed)
    p256dh, auth = _subscription_keys()
    now = utcnow()
    expires = now + timedelta(days=30)
    chunk = 5000
    for start in range(0, args.subscribers, chunk):
        rows = [
            {
                "app_id": "bench",
                "subscriber_hash": kit.keyed_hash(SUBSCRIBER_PURPOSE, "bench", f"s-{i}"),
                "subscription_sealed": kit.encrypt(
                    SUBSCRIPTION_PURPOSE,
                    "bench",
                    orjson.dumps(
                        {"endpoint": f"{args.peer_url}/push/{i}", "p256dh": p256dh, "auth": auth}
                    ),
                ),
                "created_at": now,
                "expires_at": expires,
            }
            for i in range(start, min(start + chunk, args.subscribers))
        ]
        async with session_scope(build_sessionmaker(engine)) as session:
            await session.execute(_upsert_statement("sqlite"), rows)
    await engine.dispose()

    process = psutil.Process()
    app = create_app(settings)
    headers = {"X-App-ID": "bench", "Authorization": f"Bearer {keys.secret_key}"}
    body = {"notification": {"title": "Bench", "body": "Hello", "url": "https://example.com/"}}
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://bench", timeout=3600
        ) as client,
    ):
        # Warm up: TLS handshake, connection, VAPID token.
        warm = await client.post(
            "/api/v1/web/push", headers=headers, json={"subscriber_ids": ["s-0"], **body}
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
        peer_start = peer_cpu()
        start_time = time.perf_counter()
        response = await client.post(
            "/api/v1/web/push", headers=headers, json={"all": True, **body}
        )
        elapsed = time.perf_counter() - start_time
        cpu = time.process_time() - cpu_start
        peer_seconds = peer_cpu() - peer_start
        done.set()
        await sampler
        peak = max(peak, process.memory_info().rss)
    out = response.json()
    assert response.status_code == 200 and out["sent"] == args.subscribers, response.text[:300]
    return {
        "subscribers": args.subscribers,
        "seconds": elapsed,
        "pushes_per_second": args.subscribers / elapsed,
        "cpu_ms_per_push": cpu * 1000 / args.subscribers,
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_mb": peak / 2**20,
        "rss_growth_mb": (peak - rss_before) / 2**20,
        "loop": args.loop,
        "cpu_seconds": cpu,
        "peer_cpu_seconds": peer_seconds,
        "delivered": out["sent"],
    }


def _run_size(
    size: int, directory: Path, peer: tuple[Any, str, str], keys: tuple[Path, str], loop: str
) -> dict[str, Any]:
    proc, url, ca_file = peer
    workdir = directory / f"run-{size}-{time.monotonic_ns()}"
    workdir.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.webpush",
            "--child",
            f"--subscribers={size}",
            f"--workdir={workdir}",
            f"--peer-url={url}",
            f"--peer-pid={proc.pid}",
            f"--ca-file={ca_file}",
            f"--private-file={keys[0]}",
            f"--public-key={keys[1]}",
            f"--loop={loop}",
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def push_runner(loop: str = "uvloop") -> Any:
    """The Runner bench.push uses for `webpush` scenarios: a fresh peer and child per run."""
    from bench.push import Result, Scenario

    def run_one(scenario: Scenario) -> Result:
        with tempfile.TemporaryDirectory(prefix="bench-webpush-") as tmp:
            directory = Path(tmp)
            keys = _vapid_files(directory)
            peer = _start_peer(directory, keys[1], http1=False)
            try:
                data = _run_size(scenario.recipients, directory, peer, keys, loop)
            finally:
                peer[0].terminate()
                peer[0].wait(timeout=30)
        return Result(
            scenario=scenario,
            seconds=data["seconds"],
            cpu_seconds=data["cpu_seconds"],
            peer_cpu_seconds=data["peer_cpu_seconds"],
            rss_before_mb=data["rss_before_mb"],
            rss_peak_mb=data["rss_peak_mb"],
            delivered=data["delivered"],
        )

    return run_one


def _run_child(args: argparse.Namespace) -> None:
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(_child(args))
    else:
        result = asyncio.run(_child(args))
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--http1", action="store_true", help="the peer offers HTTP/1.1 only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--subscribers", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--peer-url", help=argparse.SUPPRESS)
    parser.add_argument("--peer-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    parser.add_argument("--private-file", help=argparse.SUPPRESS)
    parser.add_argument("--public-key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_child(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench-webpush-") as tmp:
        directory = Path(tmp)
        keys = _vapid_files(directory)
        peer = _start_peer(directory, keys[1], args.http1)
        try:
            for size in args.sizes:
                result = _run_size(size, directory, peer, keys, args.loop)
                print(
                    f"webpush {size} subscribers ({args.loop}"
                    f"{', HTTP/1.1' if args.http1 else ''}): "
                    f"{result['pushes_per_second']:.0f} pushes/s (wall), "
                    f"{result['cpu_ms_per_push']:.3f} ms CPU/push, "
                    f"RSS {result['rss_before_mb']:.0f} MB -> peak {result['rss_peak_mb']:.0f} MB "
                    f"(+{result['rss_growth_mb']:.1f} MB), "
                    f"peer {result['peer_cpu_seconds'] * 1000 / size:.3f} ms CPU/push",
                    flush=True,
                )
        finally:
            peer[0].terminate()
            peer[0].wait(timeout=30)


if __name__ == "__main__":
    main()
