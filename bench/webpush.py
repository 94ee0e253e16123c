"""`python -m bench.webpush`: POST /api/v1/web/push with `all` against the local push service.

Pushes to 1,000, 10,000 and 100,000 subscribers (each size in a fresh process, so peak RSS is
per size) through the real app (ASGI, SQLite, keyset pages of 500 read while the previous page
is sent, RFC 8291 encryption and a VAPID JWT per message, HTTPS to the peer running in its own
process) and prints pushes/s, CPU per push and RSS. RSS should stay flat in the number of
subscribers: the push streams pages and never loads every subscription at once.

The peer (tests/peers/webpush.py, raw h2 in this mode) checks every request's VAPID header
(known key, `aud`, `exp`, `sub`; each distinct JWT's signature once) and decrypts one payload in
`--decrypt-every` (default 20) with http_ece, so that its own CPU is not what is measured; the
tests decrypt every message. What it verified is printed after the figures.

Target: >= 2,000 pushes/s on one process. Options: --sizes 1000 10000 100000,
--loop asyncio|uvloop, --http1 (the peer offers HTTP/1.1 only), --profile DIR (py-spy of the
app and the peer over the measured window only).

`push_runner()` is the hook `python -m bench.push` looks for: it then measures Web Push beside
APNs (`Scenario("webpush", "app", "ours", n)`) and prints both in one table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.broadcast import Result, Scenario, broadcast

ROOT = Path(__file__).resolve().parent.parent
CONTACT = "mailto:bench@example.com"
# The peer decrypts one payload in this many with http_ece (tests decrypt every one): its
# ~0.4 ms per decryption would otherwise be what a 2-core machine measures.
DECRYPT_EVERY = 20


def _vapid_files(directory: Path) -> tuple[Path, str]:
    from stateless.webpush.crypto import VapidKeys

    keys = VapidKeys.generate()
    private_file = directory / "vapid.pem"
    private_file.write_text(keys.private_pem)
    return private_file, keys.public_key


def _subscription_files(directory: Path) -> tuple[Path, str]:
    """One browser key pair for every bench subscriber (encrypting costs the same for any key):
    its private key file (the peer decrypts a sample with it) and its auth secret."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_file = directory / "subscription.pem"
    key_file.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key_file, base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def _start_peer(
    directory: Path,
    public_key: str,
    subscription: tuple[Path, str],
    http1: bool,
    decrypt_every: int,
) -> tuple[Any, str, str]:
    """The push service in its own process, holding the bench subscription's private key."""
    command = [
        sys.executable,
        "-m",
        "tests.peers.webpush",
        "--dir",
        str(directory / "peer"),
        "--vapid-key",
        public_key,
        "--subscription-key",
        str(subscription[0]),
        "--auth",
        subscription[1],
        f"--decrypt-every={decrypt_every}",
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


def _stop_peer(proc: Any) -> dict[str, Any]:
    """Stop the peer and return what it verified (its `verified <json>` line)."""
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    for line in out.splitlines():
        if line.startswith("verified "):
            report: dict[str, Any] = json.loads(line.removeprefix("verified "))
            return report
    return {}


def describe_verified(report: dict[str, Any]) -> str:
    """One line: what the peer checked while the figures were taken."""
    if not report:
        return "peer verified: (no report)"
    answered = {
        k.removeprefix("answered_"): v for k, v in report.items() if k.startswith("answered_")
    }
    return (
        f"peer verified: {report.get('served', 0)} requests answered {answered}, "
        f"{report.get('vapid_checked', 0)} VAPID headers checked (key, aud, exp, sub), "
        f"{report.get('jwt_signatures_verified', 0)} distinct JWT signatures verified, "
        f"{report.get('decrypted_with_http_ece', 0)} payloads decrypted with http_ece "
        f"(1 in {report.get('decrypt_every', '?')}), rejections {report.get('rejections', {})}"
    )


def _subscription_keys(key_file: Path) -> str:
    """The p256dh (base64url uncompressed point) of the bench subscription."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode()


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import orjson
    import psutil
    from asgi_lifespan import LifespanManager

    from stateless.config import Settings
    from stateless.kit.crypto.sealing import PrivacyKit
    from stateless.kit.data.db import build_engine, build_sessionmaker, session_scope, utcnow
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
        # the broadcast runs as a task on this app's own worker
        run_background_jobs=True,
        bot_poll_interval_seconds=0.05,
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
    p256dh, auth = _subscription_keys(Path(args.subscription_file)), args.auth
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
        profilers = _start_profilers(args)
        cpu_start = time.process_time()
        peer_start = peer_cpu()
        start_time = time.perf_counter()
        out = await broadcast(client, "/api/v1/web/push", headers, {"all": True, **body})
        elapsed = time.perf_counter() - start_time
        cpu = time.process_time() - cpu_start
        peer_seconds = peer_cpu() - peer_start
        _stop_profilers(profilers)
        done.set()
        await sampler
        peak = max(peak, process.memory_info().rss)
    assert out["sent"] == args.subscribers, str(out)[:300]
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


def _start_profilers(args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """py-spy on this process and the peer for the measured window only (--profile DIR)."""
    if not args.profile:
        return []
    spy = Path(sys.executable).with_name("py-spy")
    procs = []
    for name, pid in (("app", os.getpid()), ("peer", args.peer_pid)):
        if not pid:
            continue
        out = Path(args.profile) / f"{name}-{args.subscribers}.txt"
        command = [str(spy), "record", "-r", "500", "--format", "raw"]
        procs.append(
            subprocess.Popen(
                [*command, "-o", str(out), "-p", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(1.0)  # py-spy attaches before the window opens
    return procs


def _stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        proc.wait(timeout=60)


@dataclass(frozen=True)
class _Setup:
    """What every size shares: a directory, the VAPID pair, the bench subscription, the peer."""

    directory: Path
    vapid: tuple[Path, str]  # private key file, public key (base64url)
    subscription: tuple[Path, str]  # private key file, auth secret (base64url)
    peer: tuple[Any, str, str]  # process, url, CA file

    @classmethod
    def start(cls, directory: Path, http1: bool, decrypt_every: int) -> _Setup:
        vapid = _vapid_files(directory)
        subscription = _subscription_files(directory)
        peer = _start_peer(directory, vapid[1], subscription, http1, decrypt_every)
        return cls(directory, vapid, subscription, peer)


def _run_size(size: int, setup: _Setup, loop: str, profile: str | None = None) -> dict[str, Any]:
    proc, url, ca_file = setup.peer
    workdir = setup.directory / f"run-{size}-{time.monotonic_ns()}"
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
            f"--private-file={setup.vapid[0]}",
            f"--public-key={setup.vapid[1]}",
            f"--subscription-file={setup.subscription[0]}",
            f"--auth={setup.subscription[1]}",
            f"--loop={loop}",
            *([f"--profile={profile}"] if profile else []),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def push_runner(loop: str = "uvloop", decrypt_every: int = DECRYPT_EVERY) -> Any:
    """The Runner bench.push uses for `webpush` scenarios: a fresh peer and child per run."""

    def run_one(scenario: Scenario) -> Result:
        with tempfile.TemporaryDirectory(prefix="bench-webpush-") as tmp:
            setup = _Setup.start(Path(tmp), http1=False, decrypt_every=decrypt_every)
            try:
                data = _run_size(scenario.recipients, setup, loop)
            finally:
                verified = _stop_peer(setup.peer[0])
        return Result(
            scenario=scenario,
            seconds=data["seconds"],
            cpu_seconds=data["cpu_seconds"],
            peer_cpu_seconds=data["peer_cpu_seconds"],
            rss_before_mb=data["rss_before_mb"],
            rss_peak_mb=data["rss_peak_mb"],
            delivered=data["delivered"],
            peer_verified=describe_verified(verified),
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
    parser.add_argument(
        "--decrypt-every",
        type=int,
        default=DECRYPT_EVERY,
        metavar="N",
        help=f"the peer decrypts every Nth payload with http_ece (default {DECRYPT_EVERY})",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record py-spy profiles (raw) of the app and the peer during the push window",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--subscribers", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--peer-url", help=argparse.SUPPRESS)
    parser.add_argument("--peer-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    parser.add_argument("--private-file", help=argparse.SUPPRESS)
    parser.add_argument("--public-key", help=argparse.SUPPRESS)
    parser.add_argument("--subscription-file", help=argparse.SUPPRESS)
    parser.add_argument("--auth", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_child(args)
        return

    profile = str(Path(args.profile).resolve()) if args.profile else None
    with tempfile.TemporaryDirectory(prefix="bench-webpush-") as tmp:
        setup = _Setup.start(Path(tmp), args.http1, args.decrypt_every)
        try:
            for size in args.sizes:
                result = _run_size(size, setup, args.loop, profile)
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
            print(describe_verified(_stop_peer(setup.peer[0])), flush=True)


if __name__ == "__main__":
    main()
