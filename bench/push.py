"""`python -m bench.push`: push throughput, CPU per push and peak RSS, ours against the alternatives.

Every scenario runs in a fresh process (so peak RSS is its own) against a local APNs peer
(`tests/peers/apns.py`) running in another process, whose CPU is measured too, so a slow peer
shows instead of hiding in the figures. Two paths:

- `app`: POST /api/v1/ios/push with `all` through the whole app (ASGI, SQLite, keyset pages of
  500 tokens, sealed tokens opened, one provider JWT) with our engine (`kit/push/h2client.py`);
- `client`: the HTTP/2 library alone sending N notifications with 128 in flight, as the app
  would: `ours` (ApnsClient on kit/push/h2client.py), `httpx` (http2=True, what we used before) and
  `aioapns` (a maintained APNs client, pointed at the peer).

    .venv/bin/python -m bench.push                          # app 1k/10k/100k, clients 1k/10k
    .venv/bin/python -m bench.push --app-sizes 1000 --client-sizes 1000 --engines ours httpx

Hook for other push kinds: `run(scenarios, runners)` takes a `Runner` per `Scenario.kind`
(a function taking a scenario and returning a `Result`); `apns_runner` is the APNs one. If
`bench/webpush.py` defines `push_runner() -> Runner`, `main()` also runs
`Scenario("webpush", "app", "ours", n)` for every app size, so both print in one table.
Target: >= 2,000 pushes/s through the app, RSS flat from 1k to 100k recipients.
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.broadcast import Result, Runner, Scenario, broadcast

ROOT = Path(__file__).resolve().parent.parent
BUNDLE_ID = "com.example.bench"
TEAM_ID = "BENCHTEAM1"
KEY_ID = "BENCHKEY01"
IN_FLIGHT = 128  # the per-tenant default (APNS_TENANT_MAX_CONCURRENCY)
ENGINES = ("ours", "httpx", "aioapns")


# -- the APNs runner (parent side) ---------------------------------------------------------
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


def apns_runner(loop: str = "uvloop") -> Runner:
    """Each scenario: a fresh peer process, a fresh child process doing the pushes."""

    def run_one(scenario: Scenario) -> Result:
        with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
            directory = Path(tmp)
            private_file, public_file = _new_key(directory)
            peer, url, ca_file = _start_peer(directory, public_file)
            try:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.push",
                        "--child",
                        json.dumps(asdict(scenario)),
                        f"--workdir={directory}",
                        f"--peer-url={url}",
                        f"--peer-pid={peer.pid}",
                        f"--ca-file={ca_file}",
                        f"--key-file={private_file}",
                        f"--loop={loop}",
                    ],
                    capture_output=True,
                    cwd=ROOT,
                    text=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    timeout=1800,
                )
            finally:
                peer.terminate()
                peer.wait(10)
            if out.returncode != 0:
                raise RuntimeError(f"{scenario} failed:\n{out.stderr[-3000:]}")
            data = json.loads(out.stdout.strip().splitlines()[-1])
            return Result(scenario=scenario, **data)

    return run_one


# -- child side: the measured window -------------------------------------------------------
class _Meter:
    """CPU of this process and of the peer, wall time and peak RSS over one window."""

    def __init__(self, peer_pid: int) -> None:
        import psutil

        self.me = psutil.Process()
        self.peer = psutil.Process(peer_pid)
        self.peak = 0

    def _cpu(self, process: Any) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    async def measure(self, work: Callable[[], Any]) -> dict[str, float]:
        rss_before = self.me.memory_info().rss
        self.peak = rss_before
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                self.peak = max(self.peak, self.me.memory_info().rss)
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        cpu0, peer0, start = self._cpu(self.me), self._cpu(self.peer), time.perf_counter()
        delivered = await work()
        seconds = time.perf_counter() - start
        cpu, peer_cpu = self._cpu(self.me) - cpu0, self._cpu(self.peer) - peer0
        stop.set()
        await sampler
        self.peak = max(self.peak, self.me.memory_info().rss)
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "peer_cpu_seconds": peer_cpu,
            "rss_before_mb": rss_before / 2**20,
            "rss_peak_mb": self.peak / 2**20,
            "delivered": delivered,
        }


def _token(i: int) -> str:
    return f"{i:064x}"


async def _app_child(scenario: Scenario, args: argparse.Namespace) -> dict[str, float]:
    import httpx
    from asgi_lifespan import LifespanManager
    from sqlalchemy import insert

    from stateless.config import Settings
    from stateless.ios.models import DeviceToken
    from stateless.ios.service import DEVICE_ID_PURPOSE, TOKEN_PURPOSE
    from stateless.kit.crypto.sealing import PrivacyKit
    from stateless.kit.data.db import build_engine, build_sessionmaker, session_scope, utcnow
    from stateless.main import create_app
    from stateless.migrations.runner import upgrade
    from stateless.tenants.service import ConfigureRequest, TenantService

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
    # Rows as register-token writes them (keyed hash, sealed token), inserted in bulk.
    now = utcnow()
    expires = now + timedelta(days=30)
    for start in range(0, scenario.recipients, 5000):
        rows = [
            {
                "app_id": "bench",
                "device_hash": kit.keyed_hash(DEVICE_ID_PURPOSE, "bench", f"device-{i}"),
                "token_sealed": kit.encrypt_text(TOKEN_PURPOSE, "bench", _token(i)),
                "environment": "production",
                "topic": None,
                "created_at": now,
                "expires_at": expires,
            }
            for i in range(start, min(start + 5000, scenario.recipients))
        ]
        async with session_scope(build_sessionmaker(engine)) as session:
            await session.execute(insert(DeviceToken), rows)
    await engine.dispose()

    meter = _Meter(args.peer_pid)
    app = create_app(settings)
    headers = {"X-App-ID": "bench", "Authorization": f"Bearer {keys.secret_key}"}
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://bench",
            timeout=1800,
        ) as client,
    ):
        # Warm up: TLS handshake, HTTP/2 connection, provider token.
        warm = await client.post(
            "/api/v1/ios/push", headers=headers, json={"device_ids": ["device-0"], "badge": 1}
        )
        assert warm.status_code == 200 and warm.json()["sent"] == 1, warm.text

        async def push_all() -> int:
            result = await broadcast(
                client,
                "/api/v1/ios/push",
                headers,
                {"all": True, "alert": {"title": "Bench", "body": "Hello"}, "badge": 1},
            )
            return int(result["sent"])

        return await meter.measure(push_all)


async def _drive(count: int, send: Callable[[int], Any]) -> int:
    """`count` sends with IN_FLIGHT workers; returns how many the peer accepted (200)."""
    next_index = 0
    delivered = 0

    async def worker() -> None:
        nonlocal next_index, delivered
        while next_index < count:
            i = next_index
            next_index += 1
            if await send(i):
                delivered += 1

    await asyncio.gather(*(worker() for _ in range(min(IN_FLIGHT, count))))
    return delivered


async def _client_child(scenario: Scenario, args: argparse.Namespace) -> dict[str, float]:
    import ssl

    payload_obj = {"aps": {"alert": {"title": "Bench", "body": "Hello"}, "badge": 1}}
    key_pem = Path(args.key_file).read_text()
    context = ssl.create_default_context(cafile=args.ca_file)
    meter = _Meter(args.peer_pid)
    count = scenario.recipients

    if scenario.engine == "ours":
        import orjson

        from stateless.ios.apns import ApnsClient, ApnsCredentials, ApnsNotification

        apns = ApnsClient(production_url=args.peer_url, sandbox_url=args.peer_url, verify=context)
        credentials = ApnsCredentials(TEAM_ID, KEY_ID, key_pem)
        payload = orjson.dumps(payload_obj)

        async def send_ours(i: int) -> bool:
            notification = ApnsNotification(
                _token(i), "production", BUNDLE_ID, "alert", 10, payload
            )
            return (await apns.send("bench", credentials, notification)).delivered

        await send_ours(0)
        try:
            return await meter.measure(lambda: _drive(count, send_ours))
        finally:
            await apns.aclose()

    if scenario.engine == "httpx":
        import httpx
        import jwt
        import orjson

        bearer = jwt.encode(
            {"iss": TEAM_ID, "iat": int(time.time())},
            key_pem,
            algorithm="ES256",
            headers={"kid": KEY_ID},
        )
        headers = {
            "authorization": f"bearer {bearer}",
            "apns-topic": BUNDLE_ID,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "content-type": "application/json",
        }
        payload = orjson.dumps(payload_obj)
        async with httpx.AsyncClient(
            http2=True,
            base_url=args.peer_url,
            verify=context,
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
        ) as client:

            async def send_httpx(i: int) -> bool:
                response = await client.post(
                    f"/3/device/{_token(i)}", content=payload, headers=headers
                )
                return response.status_code == 200

            await send_httpx(0)
            return await meter.measure(lambda: _drive(count, send_httpx))

    if scenario.engine == "aioapns":
        import logging
        from urllib.parse import urlsplit

        from aioapns import APNs, NotificationRequest
        from aioapns.connection import APNsProductionClientProtocol

        logging.getLogger("aioapns").setLevel(logging.ERROR)  # it logs every connection
        port = urlsplit(args.peer_url).port

        class LocalPeer(APNsProductionClientProtocol):
            APNS_SERVER = "127.0.0.1"
            APNS_PORT = port

        context.set_alpn_protocols(["h2"])  # aioapns sets none; the peer, like Apple, wants h2
        client_aio = APNs(
            key=key_pem,
            key_id=KEY_ID,
            team_id=TEAM_ID,
            topic=BUNDLE_ID,
            max_connections=2,
            ssl_context=context,
        )
        client_aio.pool.protocol_class = LocalPeer  # its hosts are fixed to Apple's

        async def send_aio(i: int) -> bool:
            result = await client_aio.send_notification(
                NotificationRequest(device_token=_token(i), message=payload_obj)
            )
            return bool(result.is_successful)

        await send_aio(0)
        try:
            return await meter.measure(lambda: _drive(count, send_aio))
        finally:
            client_aio.pool.close()

    raise SystemExit(f"unknown engine {scenario.engine}")


def _child(args: argparse.Namespace) -> None:
    scenario = Scenario(**json.loads(args.child))
    work = _app_child if scenario.path == "app" else _client_child
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(work(scenario, args))
    else:
        result = asyncio.run(work(scenario, args))
    print(json.dumps(result), flush=True)


# -- the table -----------------------------------------------------------------------------
def print_result(result: Result) -> None:
    s = result.scenario
    lost = "" if result.delivered == s.recipients else f"  ONLY {result.delivered} delivered"
    print(
        f"{s.kind:8} {s.path:6} {s.engine:8} {s.recipients:>7}  "
        f"{result.pushes_per_second:7.0f}/s  {result.cpu_ms_per_push:6.3f} ms CPU/push  "
        f"peer {result.peer_cpu_ms_per_push:6.3f} ms/push  "
        f"RSS {result.rss_before_mb:4.0f} -> {result.rss_peak_mb:4.0f} MB "
        f"(+{result.rss_peak_mb - result.rss_before_mb:4.1f}){lost}",
        flush=True,
    )
    if result.peer_verified:
        print(f"{'':8} {result.peer_verified}", flush=True)


def run(scenarios: Iterable[Scenario], runners: Mapping[str, Runner]) -> list[Result]:
    """Run each scenario with the runner of its kind, printing one line per result."""
    print(
        f"{'kind':8} {'path':6} {'engine':8} {'pushes':>7}  {'wall rate':>9}  "
        f"{'CPU per push (ours)':>22}  {'CPU per push (peer)':>20}  peak RSS",
        flush=True,
    )
    results = []
    for scenario in scenarios:
        result = runners[scenario.kind](scenario)
        print_result(result)
        results.append(result)
    return results


def summarize(results: list[Result]) -> None:
    """Per push kind: RSS growth from the smallest to the largest audience, and the target."""
    for kind in sorted({r.scenario.kind for r in results}):
        app = [r for r in results if r.scenario.path == "app" and r.scenario.kind == kind]
        if len(app) >= 2:
            small, large = app[0], app[-1]
            print(
                f"{kind} app RSS growth {small.scenario.recipients} -> "
                f"{large.scenario.recipients} recipients: "
                f"+{small.rss_peak_mb - small.rss_before_mb:.1f} MB -> "
                f"+{large.rss_peak_mb - large.rss_before_mb:.1f} MB"
            )
        for r in app:
            capacity = 1000 / r.cpu_ms_per_push
            both = 1000 / (r.cpu_ms_per_push + r.peer_cpu_ms_per_push)
            print(
                f"{kind} app {r.scenario.recipients}: {r.pushes_per_second:.0f}/s wall on this "
                f"machine; {capacity:.0f}/s per CPU-second of the app process, {both:.0f}/s per "
                f"CPU-second of app and peer together; target >= 2000/s wall: "
                f"{'met' if r.pushes_per_second >= 2000 else 'NOT met'}"
            )


def _webpush_runner() -> Runner | None:
    """The Web Push runner, when bench/webpush.py offers one (see the module docstring)."""
    try:
        import bench.webpush as webpush
    except ImportError:
        return None
    factory = getattr(webpush, "push_runner", None)
    return factory() if callable(factory) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--app-sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--client-sizes", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--peer-url", help=argparse.SUPPRESS)
    parser.add_argument("--peer-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    parser.add_argument("--key-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    scenarios = [Scenario("apns", "app", "ours", n) for n in args.app_sizes]
    scenarios += [
        Scenario("apns", "client", engine, n) for n in args.client_sizes for engine in args.engines
    ]
    runners: dict[str, Runner] = {"apns": apns_runner(args.loop)}
    webpush = _webpush_runner()
    if webpush is not None:
        runners["webpush"] = webpush
        scenarios += [Scenario("webpush", "app", "ours", n) for n in args.app_sizes]
    results = run(scenarios, runners)
    summarize(results)
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        **asdict(r),
                        "pushes_per_second": r.pushes_per_second,
                        "cpu_ms_per_push": r.cpu_ms_per_push,
                        "peer_cpu_ms_per_push": r.peer_cpu_ms_per_push,
                    }
                    for r in results
                ],
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
