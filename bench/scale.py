"""`python -m bench.scale`: cost stays flat as data grows. Every figure is a ratio of two
measurements taken in the same run (or an absolute rate with its target), printed with PASS/FAIL
and gathered in one summary table at the end.

Sections (`--only NAME`, repeatable; all by default), sizes times `--scale`:

- load: `stateless serve` on a fresh, migrated Postgres database; register-token, drafts-read
  and entitlement-check (bench/http.py's scenarios) on near-empty tables, then 10,000,000 device
  tokens of 1,000 other tenants + 1,000,000 drafts + 1,000,000 Web Push subscriptions +
  1,000,000 entitlement sources loaded on the server side, VACUUM ANALYZE, the same scenarios again on the same server. Targets: loaded
  throughput >= 0.90x empty, p99 <= 1.25x.
- datapath: the same database, no HTTP: the repositories' register upsert and draft read
  (wired as the app wires them, bench/datapath.py's way), empty vs loaded, same targets.
- sqlite: register-token and drafts-read on SQLite, a near-empty file vs one with 1,000,000 tokens +
  1,000,000 drafts, each behind its own server, in alternating rounds.
- broadcast: 1,000,000 sealed devices of one tenant pushed to all through the APNs peer
  (tests/peers/apns.py, its own process) on the server's own worker: pushes/s end to end
  (>= 5,000/s), server RSS growth (<= 50 MB), register-token of another tenant during the
  broadcast vs quiet (>= 0.70x); then 200,000 Web Push subscriptions (>= 2,000/s, <= 50 MB).
- deletion: 10,000,000 tokens; a cohort of 1,000,000 more inserted with one expiry (as a
  campaign's registrations are), the cleanup of a `stateless worker` beside the web process, as
  deployed (leader, CLEANUP_INTERVAL_SECONDS=--cleanup-interval, default 60 as deployed; a pass
  sees the cohort live first; its pace lines printed after each cohort) clears them
  (<= 60 s after the expiry) while register-token runs (>= 0.80x of quiet: windows before and
  after, each with the database at rest); then 5,000,000
  (<= 300 s).
- bloat: the same 1,000,000 devices upserted with the repository's ON CONFLICT statement, a
  first pass as fast as it goes, then again and again at --bloat-rate (one box's register-token
  rate) for --bloat-seconds; heap and index sizes at the end <= 1.5x the first pass. On a
  server with autovacuum off (per-table settings then do nothing) it starts a throwaway
  Postgres with the defaults.

Loopback only; BENCH_DATABASE_URL / BENCH_REDIS_URL choose the servers. Every server, peer,
database and file it starts or makes goes away at the end, also on Ctrl-C or SIGTERM. The exit
code is 0 when a target fails (it is a benchmark); it is 1 only when a section broke.

    .venv/bin/python -m bench.scale --scale 0.01 --seconds 3 --only load --only sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench import scale_data as data
from bench.http import Measured, combine
from bench.scale_app import (
    SECRET_KEY,
    RssSampler,
    Server,
    Tenant,
    base_env,
    bench_tenant,
    make_draft,
    measure,
    measure_while,
    other_tenant,
    poll_until,
    scenario_table,
)

SECTIONS = ("load", "datapath", "sqlite", "broadcast", "deletion", "bloat")
LOAD_SCENARIOS = ("register-token", "drafts-read", "entitlement-check")
SQLITE_SCENARIOS = ("register-token", "drafts-read")


# -- results --------------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    figure: str
    measured: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool | None  # None: the section broke before it could tell


@dataclass
class Summary:
    rows: list[Row] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        verdict = "PASS" if row.passed else "FAIL"
        ratio = "" if row.ratio is None else f", ratio {row.ratio:.2f}"
        print(
            f"  [{verdict}] {row.section} {row.figure}: {row.measured}"
            f" (baseline {row.baseline}{ratio}; target {row.target})",
            flush=True,
        )

    def at_least(
        self, section: str, figure: str, value: float, base: float, floor: float, unit: str
    ) -> None:
        """value / base >= floor (throughput against its quiet or empty measurement)."""
        ratio = value / base if base else float("nan")
        self.add(
            Row(
                section,
                figure,
                f"{value:,.0f} {unit}",
                f"{base:,.0f} {unit}",
                ratio,
                f">= {floor:.2f}x",
                ratio >= floor,
            )
        )

    def at_most(
        self, section: str, figure: str, value: float, base: float, cap: float, unit: str
    ) -> None:
        """value / base <= cap (latency, size)."""
        ratio = value / base if base else float("nan")
        self.add(
            Row(
                section,
                figure,
                f"{value:,.1f} {unit}",
                f"{base:,.1f} {unit}",
                ratio,
                f"<= {cap:.2f}x",
                ratio <= cap,
            )
        )

    def absolute(self, section: str, figure: str, value: float, ok: bool, target: str) -> None:
        self.add(Row(section, figure, f"{value:,.1f}", "-", None, target, ok))

    def broke(self, section: str, error: BaseException) -> None:
        self.rows.append(
            Row(section, "section ran", f"error: {error!r}"[:60], "-", None, "-", None)
        )

    def print_table(self) -> None:
        header = ("section", "figure", "measured", "baseline", "ratio", "target", "result")
        lines = [
            (
                r.section,
                r.figure,
                r.measured,
                r.baseline,
                "-" if r.ratio is None else f"{r.ratio:.2f}",
                r.target,
                "ERROR" if r.passed is None else ("PASS" if r.passed else "FAIL"),
            )
            for r in self.rows
        ]
        widths = [max(len(x) for x in col) for col in zip(header, *lines, strict=False)]
        print("\n== bench.scale summary ==")
        for line in (header, *lines):
            print("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
        failed = sum(1 for r in self.rows if r.passed is False)
        broken = sum(1 for r in self.rows if r.passed is None)
        print(
            f"{len(self.rows)} figures: {len(self.rows) - failed - broken} PASS, {failed} FAIL,"
            f" {broken} ERROR; section times "
            + ", ".join(f"{k} {v:.0f} s" for k, v in self.timings.items()),
            flush=True,
        )


def scaled(n: int, scale: float, least: int = 1) -> int:
    return max(least, int(n * scale))


def p99_ms(m: Measured) -> float:
    return m.percentile_ms(0.99) if m.latency_us else m.p99_ms


def describe(m: Measured) -> str:
    bad = f", non-2xx {m.non2xx}, errors {m.errors}" if m.non2xx or m.errors else ""
    return f"{m.rate:,.0f} req/s, p99 {p99_ms(m):.1f} ms{bad}"


def flat(summary: Summary, section: str, name: str, empty: Measured, loaded: Measured) -> None:
    """The two load-section targets for one scenario: throughput and p99, loaded vs empty."""
    summary.at_least(section, f"{name} req/s", loaded.rate, empty.rate, 0.90, "req/s")
    summary.at_most(section, f"{name} p99", p99_ms(loaded), p99_ms(empty), 1.25, "ms")


# -- load + datapath --------------------------------------------------------------------------
async def timed(
    op: Callable[[int], Awaitable[None]], seconds: float, concurrency: int
) -> tuple[float, float]:
    """`concurrency` workers calling `op` for `seconds`: (ops/s, p99 ms)."""
    latencies: list[float] = []
    counter = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < stop:
            counter += 1
            started = time.perf_counter()
            await op(counter)
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return len(latencies) / elapsed, p99


class DataPath:
    """The repositories alone, wired as the app wires them (bench/datapath.py): `concurrency`
    operations at a time for a fixed time, ops/s and p99 latency."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.url, self.concurrency = url, concurrency
        self.closers: list[Callable[[], Awaitable[Any]]] = []

    async def open(self) -> DataPath:
        from datetime import UTC, datetime, timedelta

        from stateless.config import Settings
        from stateless.drafts.models import Draft
        from stateless.drafts.repository import DraftRepository
        from stateless.ios.repository import DeviceTokenRepository
        from stateless.kit.crypto.sealing import PrivacyKit
        from stateless.kit.data.db import (
            build_engine,
            build_read_engine,
            build_sessionmaker,
            dispose_engines,
            open_direct,
            session_scope,
        )
        from stateless.tenants.schemas import VerifiedAppId

        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=self.url,
            environment="test",
            db_pool_size=self.concurrency,
        )
        kit = PrivacyKit(settings.secret_key)
        engine = build_engine(settings, pool_size=2)
        read_engine = build_read_engine(settings, engine)
        direct = await open_direct(settings, engine)
        self.closers.append(lambda: dispose_engines(engine, read_engine))
        if direct is not None:
            self.closers.append(direct.close)
        write, read = build_sessionmaker(engine, direct), build_sessionmaker(read_engine, direct)
        tenant = VerifiedAppId("bench")
        draft_id = "datapath" + "0" * 24
        async with session_scope(write) as session:
            await DraftRepository(session, tenant).insert(
                Draft(
                    draft_id=draft_id,
                    content_sealed=kit.encrypt("draft-content", "bench", b"datapath draft"),
                    size_bytes=14,
                    expires_at=datetime.now(UTC) + timedelta(days=7),
                )
            )
        token = kit.encrypt_text("apns-token", "bench", "ab" * 32)

        async def register(i: int) -> None:
            async with session_scope(write) as session:
                await DeviceTokenRepository(session, tenant).upsert(
                    kit.keyed_hash("ios-device-id", "bench", f"dp-device-{i % 20000}"),
                    token,
                    "production",
                    None,
                    datetime.now(UTC) + timedelta(days=30),
                )

        async def read_draft(i: int) -> None:
            async with session_scope(read) as session:
                draft = await DraftRepository(session, tenant).by_id(draft_id)
                assert draft is not None
                kit.decrypt("draft-content", "bench", draft.content_sealed)

        self.ops = {"register upsert": register, "draft read": read_draft}
        return self

    async def run(self, seconds: float) -> dict[str, tuple[float, float]]:
        """Per operation: (ops/s, p99 ms) over `seconds` after a short warm-up."""
        out = {}
        for name, op in self.ops.items():
            for i in range(50):
                await op(-i - 1)
            out[name] = await timed(op, seconds, self.concurrency)
        return out

    async def close(self) -> None:
        for closer in reversed(self.closers):
            await closer()


async def section_load(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack, summary: Summary, wanted: set[str]
) -> None:
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-load-")))
    url = await args.dbs.create("load")
    env = base_env(url, workdir)
    tenant = bench_tenant(env)
    server: Server | None = None
    table = {}
    if "load" in wanted:
        server = Server(env, workdir).start()
        stack.callback(server.stop)
        table = scenario_table(tenant, make_draft(server, tenant))
    path: DataPath | None = None
    if "datapath" in wanted:
        path = await DataPath(url, args.datapath_concurrency).open()
        stack.push_async_callback(path.close)

    async def round_of(label: str) -> tuple[dict[str, Measured], dict[str, tuple[float, float]]]:
        http = {}
        if server is not None:
            for name in LOAD_SCENARIOS:
                http[name] = await measure(
                    table[name], server, args.connections, args.seconds, args.warmup
                )
                print(f"  load {label} {name}: {describe(http[name])}", flush=True)
        direct = {}
        if path is not None:
            direct = await path.run(args.seconds)
            for name, (rate, p99) in direct.items():
                print(f"  datapath {label} {name}: {rate:,.0f} ops/s, p99 {p99:.2f} ms", flush=True)
        return http, direct

    empty_http, empty_direct = await round_of("empty")
    tokens = scaled(10_000_000, args.scale)
    drafts = subs = sources = scaled(1_000_000, args.scale)
    print(
        f"  loading {tokens:,} device tokens ({data.OTHER_TENANTS} other tenants),"
        f" {drafts:,} drafts, {subs:,} web push subscriptions, {sources:,} entitlement"
        " sources ...",
        flush=True,
    )
    loaded_tables = ("ios_device_tokens", "drafts", "webpush_subscriptions", "entitlement_sources")
    seconds = await data.fill(url, "ios_device_tokens", tokens)
    seconds += await data.fill(url, "drafts", drafts)
    seconds += await data.fill(url, "webpush_subscriptions", subs)
    seconds += await data.fill(url, "entitlement_sources", sources)
    vacuum = await data.vacuum_analyze(url, *loaded_tables)
    found = await data.sizes(url, *loaded_tables)
    rows = tokens + drafts + subs + sources
    print(
        f"  loaded in {seconds:.1f} s ({rows / seconds:,.0f} rows/s),"
        f" VACUUM ANALYZE {vacuum:.1f} s; {data.describe_sizes(found)}",
        flush=True,
    )
    loaded_http, loaded_direct = await round_of("loaded")
    for name, empty in empty_http.items():
        flat(summary, "load", name, empty, loaded_http[name])
    for name, (rate, p99) in empty_direct.items():
        rate2, p992 = loaded_direct[name]
        summary.at_least("datapath", f"{name} ops/s", rate2, rate, 0.90, "ops/s")
        summary.at_most("datapath", f"{name} p99", p992, p99, 1.25, "ms")


# -- sqlite ---------------------------------------------------------------------------------
async def section_sqlite(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack, summary: Summary
) -> None:
    """Two files side by side, one near-empty and one loaded, each behind its own server, and
    the rounds alternate between them (bench/http.py's method): a single empty-then-loaded
    pair of windows charged the machine's drift between them, and the kernel's write-back of
    the freshly loaded file, to the rows."""
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-sqlite-")))
    files = {"empty": workdir / "empty.db", "loaded": workdir / "loaded.db"}
    envs = {
        label: base_env(f"sqlite+aiosqlite:///{path}", workdir) for label, path in files.items()
    }
    tenants = {label: bench_tenant(env) for label, env in envs.items()}
    tokens = drafts = scaled(1_000_000, args.scale)
    print(f"  loading {tokens:,} device tokens and {drafts:,} drafts ...", flush=True)
    seconds = await asyncio.to_thread(data.fill_sqlite, files["loaded"], tokens, drafts)
    size = sum(p.stat().st_size for p in workdir.glob("loaded.db*"))
    print(f"  loaded in {seconds:.1f} s; file {size / 2**20:,.0f} MB", flush=True)
    await asyncio.to_thread(os.sync)  # measured at rest, not during the load's write-back
    servers = {
        label: Server(env, workdir, name=f"serve-{label}").start() for label, env in envs.items()
    }
    for server in servers.values():
        stack.callback(server.stop)
    tables = {
        label: scenario_table(tenants[label], make_draft(server, tenants[label]))
        for label, server in servers.items()
    }
    windows: dict[tuple[str, str], list[Measured]] = {}
    for round_no in range(1, args.sqlite_rounds + 1):
        for name in SQLITE_SCENARIOS:
            for label in ("empty", "loaded"):
                got = await measure(
                    tables[label][name], servers[label], args.connections, args.seconds,
                    args.warmup,
                )  # fmt: skip
                windows.setdefault((label, name), []).append(got)
                print(f"  sqlite round {round_no} {label} {name}: {describe(got)}", flush=True)
    for name in SQLITE_SCENARIOS:
        flat(
            summary, "sqlite", name, combine(windows["empty", name]),
            combine(windows["loaded", name]),
        )  # fmt: skip


# -- broadcast ------------------------------------------------------------------------------
class Broadcast:
    """A push to `all`, queued (202) and polled to its end (bench/broadcast.py's protocol),
    while the caller does something else; `done` is set when the task ended."""

    def __init__(self, server: Server, tenant: Tenant, path: str, body: dict[str, Any]) -> None:
        self.server, self.tenant, self.path, self.body = server, tenant, path, body
        self.done = asyncio.Event()
        self.result: dict[str, Any] = {}
        self.seconds = 0.0

    async def run(self) -> None:
        headers = self.tenant.headers(secret=True)
        async with httpx.AsyncClient(base_url=self.server.base, timeout=60) as client:
            started = time.perf_counter()
            queued = await client.post(self.path, headers=headers, json=self.body)
            assert queued.status_code == 202, queued.text[:300]
            task_id = queued.json()["task_id"]
            try:
                while True:
                    task = (
                        await client.get(f"/api/v1/bots/tasks/{task_id}", headers=headers)
                    ).json()
                    if task["status"] not in ("queued", "running"):
                        break
                    await asyncio.sleep(0.1)
                self.seconds = time.perf_counter() - started
                assert task["status"] == "success", str(task)[:300]
                self.result = dict(task["result"])
            finally:
                self.done.set()


async def section_broadcast(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack, summary: Summary
) -> None:
    from bench import push as apns_bench
    from bench import webpush as webpush_bench

    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-push-")))
    url = await args.dbs.create("broadcast")
    # each peer in its own directory: both write their test CA as peer/<name>
    (workdir / "apns").mkdir()
    (workdir / "webpush").mkdir()
    private_key, public_key = apns_bench._new_key(workdir / "apns")
    subscription = webpush_bench._subscription_files(workdir / "webpush")
    apns_peer, apns_url, apns_ca = apns_bench._start_peer(workdir / "apns", public_key)
    stack.callback(_stop_process, apns_peer)
    # APNs and the Web Push services run elsewhere in a deployment: their stand-ins here get
    # the CPU our processes leave (--peer-nice), not a share taken from the request path.
    psutil.Process(apns_peer.pid).nice(args.peer_nice)
    env = base_env(
        url,
        workdir,
        # inline: the broadcast runs in the web process; worker: in `stateless worker` (niced)
        RUN_BACKGROUND_JOBS="true" if args.broadcast_worker == "inline" else "false",
        BOT_POLL_INTERVAL_SECONDS="0.05",
        CLEANUP_INTERVAL_SECONDS="3600",
        APNS_PRODUCTION_URL=apns_url,
        APNS_SANDBOX_URL=apns_url,
        APNS_CA_FILE=apns_ca,
        WEBPUSH_ALLOW_PRIVATE_NETWORKS="true",
    )
    tenant = bench_tenant(env)
    from bench.http import stateless

    stateless(
        env,
        "tenants",
        "configure",
        "bench",
        "--bundle-id",
        apns_bench.BUNDLE_ID,
        "--apns-team-id",
        apns_bench.TEAM_ID,
        "--apns-key-id",
        apns_bench.KEY_ID,
        "--apns-key-file",
        str(private_key),
    )
    web = other_tenant(env, "web")
    out = stateless(
        env,
        "tenants",
        "configure",
        "web",
        "--webpush-generate-keys",
        "--webpush-contact",
        webpush_bench.CONTACT,
    )
    vapid_public = out.split("webpush public key:", 1)[1].split()[0]
    side = other_tenant(env, "other")
    web_peer, web_url, web_ca = webpush_bench._start_peer(
        workdir / "webpush", vapid_public, subscription, False, webpush_bench.DECRYPT_EVERY
    )
    stack.callback(_stop_process, web_peer)
    psutil.Process(web_peer.pid).nice(args.peer_nice)
    env["WEBPUSH_CA_FILE"] = web_ca

    devices = scaled(1_000_000, args.scale, 10)
    subs = scaled(200_000, args.scale, 10)
    p256dh = webpush_bench._subscription_keys(subscription[0])
    print(f"  sealing {devices:,} devices and {subs:,} subscriptions ...", flush=True)
    seeded = await data.seed_sealed_devices(url, "bench", SECRET_KEY, devices)
    seeded += await data.seed_sealed_subscriptions(
        url, "web", SECRET_KEY, subs, web_url, p256dh, subscription[1]
    )
    await data.vacuum_analyze(url, "ios_device_tokens", "webpush_subscriptions")
    print(f"  seeded in {seeded:.1f} s", flush=True)

    server = Server(env, workdir).start()
    stack.callback(server.stop)
    if args.broadcast_worker == "worker":
        server.start_worker()
    print(
        f"  broadcasts run in: {args.broadcast_worker}; peers at nice {args.peer_nice}", flush=True
    )
    async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
        # warm up: TLS, HTTP/2 connections, provider token and VAPID JWT (bench/push.py's way)
        warm = await client.post(
            "/api/v1/ios/push",
            headers=tenant.headers(secret=True),
            json={"device_ids": ["device-0"], "badge": 1},
        )
        if warm.status_code != 200 or warm.json()["sent"] != 1:
            raise RuntimeError(f"APNs warm-up: {warm.text[:300]}\n{server.log_tail()}")
        note = {"title": "Bench", "body": "Hello", "url": "https://example.com/"}
        warm = await client.post(
            "/api/v1/web/push",
            headers=web.headers(secret=True),
            json={"subscriber_ids": ["s-0"], "notification": note},
        )
        if warm.status_code != 200 or warm.json()["sent"] != 1:
            raise RuntimeError(f"Web Push warm-up: {warm.text[:300]}\n{server.log_tail()}")

    register = scenario_table(side, "unused")["register-token"]
    quiet = await measure(register, server, args.side_connections, args.seconds, args.warmup)
    print(f"  register-token (tenant other), quiet: {describe(quiet)}", flush=True)

    apns = Broadcast(
        server,
        tenant,
        "/api/v1/ios/push",
        {"all": True, "alert": {"title": "Bench", "body": "Hello"}, "badge": 1},
    )
    async with RssSampler(server.job_pid) as rss:
        job = asyncio.create_task(apns.run())
        started = time.monotonic()
        during = await measure_while(
            register,
            server,
            args.side_connections,
            lambda: not apns.done.is_set() and time.monotonic() - started < args.seconds,
        )
        await job
    overlap = min(1.0, apns.seconds / during.seconds) if during.seconds else 0.0
    sent = int(apns.result.get("sent", 0))
    rate = sent / apns.seconds if apns.seconds else 0.0
    print(
        f"  APNs broadcast: {sent:,} of {devices:,} sent in {apns.seconds:.1f} s"
        f" ({rate:,.0f}/s; register-token load ran during its first {during.seconds:.1f} s),"
        f" server RSS {rss.before / 2**20:.0f} -> {rss.peak / 2**20:.0f} MB;"
        f" register-token during: {describe(during)}"
        + ("" if overlap >= 1 else f" (broadcast covered only {overlap:.0%} of the window)"),
        flush=True,
    )
    summary.absolute(
        "broadcast", "APNs pushes/s", rate, rate >= 5000 and sent == devices, ">= 5,000/s"
    )
    summary.absolute(
        "broadcast", "APNs server RSS growth MB", rss.growth_mb, rss.growth_mb <= 50, "<= 50 MB"
    )
    summary.at_least(
        "broadcast", "register-token other tenant", during.rate, quiet.rate, 0.70, "req/s"
    )

    body = {"all": True, "notification": note}
    webpush = Broadcast(server, web, "/api/v1/web/push", body)
    async with RssSampler(server.job_pid) as rss:
        await webpush.run()
    sent = int(webpush.result.get("sent", 0))
    rate = sent / webpush.seconds if webpush.seconds else 0.0
    print(
        f"  Web Push broadcast: {sent:,} of {subs:,} sent in {webpush.seconds:.1f} s"
        f" ({rate:,.0f}/s), server RSS {rss.before / 2**20:.0f} -> {rss.peak / 2**20:.0f} MB",
        flush=True,
    )
    summary.absolute(
        "broadcast", "Web Push pushes/s", rate, rate >= 2000 and sent == subs, ">= 2,000/s"
    )
    summary.absolute(
        "broadcast", "Web Push server RSS growth MB", rss.growth_mb, rss.growth_mb <= 50, "<= 50 MB"
    )
    print(f"  {webpush_bench.describe_verified(webpush_bench._stop_peer(web_peer))}", flush=True)


def _stop_process(proc: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()


class Drained:
    """True once no expired device-token row is left. Asked as "is there one?", once a second,
    one probe of the expiry index: a count(*) of what is left visits every remaining row's heap
    tuple, and four times a second over millions of rows it was the heaviest load on the box,
    charged to the cleanup it was watching. (The probe still steps over the index entries of
    the rows deleted so far, which stay until a vacuum.)"""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def __call__(self) -> bool:
        left = await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM ios_device_tokens WHERE expires_at <= now())"
        )
        return not left


# -- deletion -------------------------------------------------------------------------------
PACE_FIELDS = (
    "walked",
    "rows",
    "seconds",
    "share",
    "late",
    "busy",
    "row_us",
    "base_row_us",
    "judged_row_us",
    "overhead_ms",
)


def pace_lines(log_path: Path, offset: int) -> list[str]:
    """The device-token drain's pace, as the server logged it (every 10 s and at the end):
    what the cleanup saw and took, beside what the requests got."""
    lines = []
    with log_path.open("rb") as log:
        log.seek(offset)
        for raw in log:
            if b"cleanup_kind_dra" not in raw:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("kind") != "device_tokens":
                continue
            shown = " ".join(f"{name}={entry.get(name)}" for name in PACE_FIELDS)
            lines.append(f"{entry.get('event')}: {shown}")
    return lines


async def at_rest(conn: asyncpg.Connection) -> None:
    """Write what a bulk insert left dirty before a quiet window: a quiet measurement taken
    while the checkpointer and the kernel flush a fresh cohort (300 MB to 1.5 GB) read 1,320
    req/s where the same server did 2,253 a minute later."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")
    await asyncio.to_thread(os.sync)


async def section_deletion(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack, summary: Summary
) -> None:
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-delete-")))
    url = await args.dbs.create("deletion")
    env = base_env(url, workdir, CLEANUP_INTERVAL_SECONDS=str(args.cleanup_interval))
    tenant = bench_tenant(env)
    tokens = scaled(10_000_000, args.scale)
    print(f"  loading {tokens:,} device tokens ...", flush=True)
    seconds = await data.fill(url, "ios_device_tokens", tokens)
    await data.vacuum_analyze(url, "ios_device_tokens")
    print(f"  loaded in {seconds:.1f} s", flush=True)
    server = Server(env, workdir).start()
    stack.callback(server.stop)
    # As deployed (render.yaml): the web process serves, a worker leads and runs the cleanup
    # (its pace lines, cleanup_kind_draining/drained, are info).
    server.start_worker(LOG_LEVEL="INFO")
    register = scenario_table(tenant, "unused")["register-token"]
    conn = await asyncpg.connect(url)
    stack.push_async_callback(conn.close)

    targets = {1: 60.0, 5: 300.0}
    for million in args.deletion_cohorts:
        target = targets[million]
        count = scaled(million * 1_000_000, args.scale)
        # A cohort written earlier with one expiry, as a campaign's registrations are: the rows
        # are inserted with it (other tenants, beside the 10,000,000), far enough ahead for the
        # insert, the quiet measurement and one cleanup pass that sees them still live (every
        # --cleanup-interval at the latest); the leader then comes back just after the expiry.
        # The insert is planned at 15,000 rows/s: 5,000,000 rows into a table of 11,000,000
        # went at 20,000/s once, and a cohort still arriving at its expiry is deleted while it
        # is written (that run's figures start late and say so).
        lead = count / 15_000 + args.seconds + args.warmup + args.cleanup_interval + 10.0
        expiry = datetime.now(UTC) + timedelta(seconds=lead)
        inserted = await data.fill(
            url, "ios_device_tokens", count, salt=f"cohort-{million}", expires_at=expiry
        )
        await conn.execute("ANALYZE ios_device_tokens")
        await at_rest(conn)
        quiet = await measure(register, server, args.connections, args.seconds, args.warmup)
        print(f"  register-token quiet before: {describe(quiet)}", flush=True)
        late = (datetime.now(UTC) - expiry).total_seconds()
        await asyncio.sleep(max(0.0, -late))
        zero = time.perf_counter()
        log_start = server.worker_log_path.stat().st_size
        watcher = asyncio.create_task(poll_until(Drained(conn), target * 3, 1.0))
        during = await measure_while(
            register, server, args.connections, lambda w=watcher: not w.done(), 1.0, target * 3
        )
        finished = await watcher
        took = time.perf_counter() - zero
        for line in pace_lines(server.worker_log_path, log_start):
            print(f"    {line}", flush=True)
        # Quiet again once the cohort is gone: the baseline is both windows together, so the
        # machine's drift over the minutes between them is not charged to the deletion.
        await at_rest(conn)
        after = await measure(register, server, args.connections, args.seconds, args.warmup)
        print(f"  register-token quiet after: {describe(after)}", flush=True)
        quiet = combine([quiet, after])
        print(
            f"  {count:,} rows expiring at {expiry:%H:%M:%S} (inserted in {inserted:.1f} s"
            + (f", {late:.1f} s after the instant" if late > 0 else "")
            + f"): gone after {took:.1f} s{'' if finished else ' (NOT gone, gave up)'};"
            f" register-token during: {describe(during)}",
            flush=True,
        )
        label = f"{count:,} expired rows"
        summary.absolute(
            "deletion",
            f"{label} cleared s",
            took,
            finished and took <= target,
            f"<= {target:.0f} s",
        )
        summary.at_least(
            "deletion", f"register-token during {label}", during.rate, quiet.rate, 0.80, "req/s"
        )


# -- bloat ----------------------------------------------------------------------------------
UPSERT = (
    # The statement DeviceTokenRepository.upsert runs (ON CONFLICT (app_id, device_hash) DO
    # UPDATE of every non-key column, created_at included), for a range of devices at once.
    "INSERT INTO ios_device_tokens (app_id, device_hash, token_sealed, environment, topic,"
    " created_at, expires_at)"
    " SELECT 'bench', left(encode(sha256(int8send(g)), 'hex'), 43),"
    " left(repeat(md5(random()::text), 5), 135), 'production', NULL, now(),"
    " now() + interval '30 days' FROM generate_series($1::bigint, $2::bigint) g"
    " ON CONFLICT (app_id, device_hash) DO UPDATE SET token_sealed = excluded.token_sealed,"
    " environment = excluded.environment, topic = excluded.topic,"
    " created_at = excluded.created_at, expires_at = excluded.expires_at"
)


async def section_bloat(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack, summary: Summary
) -> None:
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-bloat-")))
    url = await args.dbs.create("bloat")
    probe = await asyncpg.connect(url)
    autovacuum = await probe.fetchval("SHOW autovacuum")
    await probe.close()
    if autovacuum != "on":
        # Per-table autovacuum settings (migration 0012) do nothing on a server that runs
        # autovacuum off (this machine's CI server does): measure on a throwaway server with
        # Postgres' own defaults, as a deployment has them.
        from tests.services import _start_postgres

        cleanups: list[Any] = []
        stack.callback(lambda: [stop() for stop in cleanups])
        admin_url = _start_postgres(cleanups)
        admin = await asyncpg.connect(admin_url)
        await admin.execute("CREATE DATABASE bloat")
        await admin.close()
        url = admin_url.rsplit("/", 1)[0] + "/bloat"
        print(
            "  the benchmark server runs with autovacuum off; bloat is measured on a throwaway"
            " Postgres with its defaults",
            flush=True,
        )
    bench_tenant(base_env(url, workdir))  # migrated the way the others are
    devices = scaled(1_000_000, args.scale)
    batch = 1000
    sessions = [await asyncpg.connect(url) for _ in range(2)]
    for session in sessions:
        stack.push_async_callback(session.close)

    async def one_pass(deadline: float) -> int:
        ranges = [(lo, min(lo + batch, devices) - 1) for lo in range(0, devices, batch)]
        done = 0

        async def worker(conn: asyncpg.Connection) -> None:
            nonlocal done
            while ranges and time.monotonic() < deadline:
                lo, hi = ranges.pop()
                await conn.execute(UPSERT, lo, hi)
                done += hi - lo + 1
                if rate[0]:  # at most that many upserts a second, across the sessions
                    pace[0] = max(pace[0], time.monotonic()) + (hi - lo + 1) / rate[0]
                    await asyncio.sleep(max(0.0, pace[0] - time.monotonic()))

        await asyncio.gather(*(worker(c) for c in sessions))
        return done

    rate, pace = [0.0], [0.0]  # the first pass as fast as it goes
    began = time.monotonic()
    await one_pass(math.inf)
    first_pass = time.monotonic() - began
    rate[0] = args.bloat_rate
    first = (await data.sizes(url, "ios_device_tokens"))["ios_device_tokens"]
    print(
        f"  first pass of {devices:,} upserts: {first_pass:.1f} s;"
        f" {data.describe_sizes({'ios_device_tokens': first})}",
        flush=True,
    )
    deadline = began + args.bloat_seconds
    passes, upserts = 1, devices
    while time.monotonic() < deadline:
        upserts += await one_pass(deadline)
        passes += 1
    end = (await data.sizes(url, "ios_device_tokens"))["ios_device_tokens"]
    stats = await sessions[0].fetchrow(
        "SELECT n_live_tup, n_dead_tup, autovacuum_count, vacuum_count FROM pg_stat_user_tables"
        " WHERE relname = 'ios_device_tokens'"
    )
    print(
        f"  {upserts:,} upserts in {passes} passes over {time.monotonic() - began:.0f} s;"
        f" {data.describe_sizes({'ios_device_tokens': end})}; {dict(stats or {})}",
        flush=True,
    )
    summary.at_most("bloat", "table size MB", end[0] / 2**20, first[0] / 2**20, 1.5, "MB")
    summary.at_most("bloat", "index size MB", end[1] / 2**20, first[1] / 2**20, 1.5, "MB")


# -- main -----------------------------------------------------------------------------------
async def run(args: argparse.Namespace) -> Summary:
    summary = Summary()
    wanted = set(args.only or SECTIONS)
    args.dbs = data.Databases()
    plan: list[tuple[str, Callable[[contextlib.AsyncExitStack], Awaitable[None]]]] = []
    if wanted & {"load", "datapath"}:
        name = "+".join(s for s in ("load", "datapath") if s in wanted)
        plan.append((name, lambda stack: section_load(args, stack, summary, wanted)))
    for name, func in (
        ("sqlite", section_sqlite),
        ("broadcast", section_broadcast),
        ("deletion", section_deletion),
        ("bloat", section_bloat),
    ):
        if name in wanted:
            plan.append((name, lambda stack, func=func: func(args, stack, summary)))
    try:
        for name, section in plan:
            print(f"\n== {name} (scale {args.scale:g}) ==", flush=True)
            started = time.monotonic()
            try:
                async with contextlib.AsyncExitStack() as stack:
                    await section(stack)
            except Exception as exc:
                traceback.print_exc()
                for part in name.split("+"):
                    summary.broke(part, exc)
            finally:
                summary.timings[name] = time.monotonic() - started
    finally:
        await args.dbs.drop_all()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=SECTIONS, help="repeatable")
    parser.add_argument("--scale", type=float, default=1.0, help="times every row count")
    parser.add_argument("--seconds", type=float, default=8.0, help="each measured window")
    parser.add_argument("--warmup", type=float, default=None, help="default: min(2, seconds/2)")
    parser.add_argument("--connections", type=int, default=64, help="HTTP load connections")
    parser.add_argument(
        "--side-connections",
        type=int,
        default=8,
        help="connections of the other tenant's register-token load beside a broadcast",
    )
    parser.add_argument("--datapath-concurrency", type=int, default=16)
    parser.add_argument(
        "--sqlite-rounds",
        type=int,
        default=5,
        help="alternating empty/loaded windows per SQLite scenario (rounds vary by 15 %% here)",
    )
    parser.add_argument("--bloat-seconds", type=float, default=600.0)
    # The default setting: the leader wakes at the soonest expiry it saw, not only on the tick.
    # What one box's register-token sustains (the load section: 2,267-2,416 req/s): the API
    # cannot upsert faster; 0 upserts as fast as the database takes them.
    parser.add_argument("--bloat-rate", type=float, default=2500.0)
    parser.add_argument("--cleanup-interval", type=float, default=60.0)
    parser.add_argument(
        "--deletion-cohorts",
        type=int,
        nargs="+",
        choices=[1, 5],
        default=[1, 5],
        help="the cohorts (millions of rows) the deletion section erases, in this order",
    )
    parser.add_argument(
        "--peer-nice",
        type=int,
        default=10,
        help="niceness of the APNs and Web Push peers (stand-ins for services on other hosts)",
    )
    parser.add_argument(
        "--broadcast-worker",
        choices=("worker", "inline"),
        default="worker",
        help="where broadcasts run: `stateless worker` beside the web process (as deployed), "
        "or the web process itself (RUN_BACKGROUND_JOBS=true, the embedded default)",
    )
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(2.0, args.seconds / 2)

    def on_signal(_signum: int, _frame: Any) -> None:
        # Raised wherever the main thread is, even inside a blocking CLI call; the `finally`
        # blocks then stop what was started and drop the databases. (asyncio.run's own SIGINT
        # handler only cancels the main task, which a blocking call or a library can delay.)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        summary = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("\ninterrupted: servers, peers and databases stopped and dropped", file=sys.stderr)
        return 130
    summary.print_table()
    return 1 if any(r.passed is None for r in summary.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
