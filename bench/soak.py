"""Soak: steady mixed load on a real `stateless serve` for --minutes; no 5xx, no memory growth.

Throwaway Postgres and Redis, the cleanup loop on (short TTLs so it always has work), and
--connections clients sharing a --rate budget of: drafts create/read/delete, affiliate generate,
health with X-App-ID, admin stats. The server's RSS is sampled after a 30 s warm-up and at the
end; PASS needs zero 5xx, zero transport errors and RSS growth under --max-growth percent.

    .venv/bin/python -m bench.soak --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psutil  # type: ignore[import-untyped]

from bench.procs import Sandbox, Tenant, bounded, sandbox

WARMUP_SECONDS = 30.0


@dataclass
class Stats:
    statuses: Counter[int] = field(default_factory=Counter)
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def p(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def _client_loop(
    client: httpx.AsyncClient,
    tenant: Tenant,
    worker: int,
    interval: float,
    stop_at: float,
    stats: Stats,
) -> None:
    pk, sk = tenant.headers(), tenant.headers(secret=True)
    mine: list[str] = []
    rng = random.Random(worker)
    n = 0
    next_at = time.monotonic() + rng.random() * interval
    while True:
        now = time.monotonic()
        if now >= stop_at:
            return
        if next_at > now:
            await asyncio.sleep(next_at - now)
        next_at += interval
        n += 1
        roll = rng.random()
        if roll < 0.30 or not mine:
            op = "draft.create"
            # short TTLs: a third expire within seconds, so cleanup always has rows to delete
            ttl = rng.choice((2, 5, 30, 600))
            body = {"content": f"soak {worker}-{n} " + "x" * rng.randint(10, 4000)}
            request = client.build_request(
                "POST", "/api/v1/drafts", headers=pk, json={**body, "ttl_seconds": ttl}
            )
        elif roll < 0.50:
            op = "draft.read"
            request = client.build_request("GET", f"/api/v1/drafts/{rng.choice(mine)}", headers=pk)
        elif roll < 0.60:
            op = "draft.delete"
            request = client.build_request("DELETE", f"/api/v1/drafts/{mine.pop()}", headers=pk)
        elif roll < 0.80:
            op = "affiliate.generate"
            request = client.build_request(
                "POST",
                "/api/v1/affiliate/generate",
                headers=pk,
                json={"code_id": f"user-{rng.randint(1, 5000)}"},
            )
        elif roll < 0.92:
            op = "health"
            request = client.build_request("GET", "/health", headers={"X-App-ID": tenant.app_id})
        else:
            op = "admin.stats"
            request = client.build_request("GET", "/api/v1/admin/stats", headers=sk)
        started = time.monotonic()
        try:
            response = await client.send(request)
        except httpx.HTTPError as exc:
            stats.errors[f"{op}:{type(exc).__name__}"] += 1
            continue
        stats.latencies.append(time.monotonic() - started)
        stats.statuses[response.status_code] += 1
        stats.ops[op] += 1
        if op == "draft.create" and response.status_code == 201:
            mine.append(response.json()["id"])
            del mine[:-50]


async def _sample_rss(proc: psutil.Process, stop_at: float, stats: Stats) -> None:
    started = time.monotonic()
    while time.monotonic() < stop_at:
        stats.samples.append((time.monotonic() - started, proc.memory_info().rss))
        await asyncio.sleep(5)
    stats.samples.append((time.monotonic() - started, proc.memory_info().rss))


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            match = re.match(rf"{name}(?:\{{[^}}]*\}})?\s+(\S+)", line)
            if match:
                total += float(match.group(1))
    return total


async def _soak(box: Sandbox, minutes: float, connections: int, rate: float) -> Stats:
    env = box.env(
        RUN_BACKGROUND_JOBS="true",
        CLEANUP_INTERVAL_SECONDS="5",
        DB_POOL_SIZE="10",
        DB_MAX_OVERFLOW="10",
    )
    tenant = box.setup_tenant(env, "soak", "default=1000000/minute", "health=1000000/minute")
    base, proc = box.serve(env)
    server = psutil.Process(proc.pid)
    stats = Stats()
    duration = minutes * 60
    stop_at = time.monotonic() + duration
    interval = connections / rate
    # idle connections expire on the client (2 s) before uvicorn closes them (5 s): otherwise a
    # request can race the server's close and fail on the client, which is no server fault
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        tasks = [
            asyncio.create_task(_client_loop(client, tenant, i, interval, stop_at, stats))
            for i in range(connections)
        ]
        sampler = asyncio.create_task(_sample_rss(server, stop_at, stats))
        last_report = time.monotonic()
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1)
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                done = sum(stats.statuses.values())
                print(
                    f"  {done} requests, 5xx {stats.server_errors}, "
                    f"rss {server.memory_info().rss / 2**20:.1f} MiB",
                    flush=True,
                )
        await asyncio.gather(*tasks, sampler)
        metrics = (await client.get("/metrics")).text
    deleted = _metric(metrics, "stateless_cleanup_deleted_rows_total")
    runs = _metric(metrics, "stateless_cleanup_runs_total")
    print(f"  cleanup: {runs:.0f} runs, {deleted:.0f} expired rows deleted", flush=True)
    log = (box.root / "serve.log").read_text(errors="replace").splitlines()
    errors = [line for line in log if '"level": "error"' in line or "Traceback" in line]
    print(f"  server log: {len(log)} lines at WARNING+, {len(errors)} errors", flush=True)
    for line in errors[:3]:
        print(f"    {line[:300]}", flush=True)
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0, help="total requests per second")
    parser.add_argument("--max-growth", type=float, default=10.0, help="percent")
    args = parser.parse_args()
    if args.minutes * 60 <= WARMUP_SECONDS:
        parser.error("--minutes must be longer than the 30 s warm-up")
    print(
        f"soak: {args.minutes:g} min, {args.connections} connections, {args.rate:g} req/s",
        flush=True,
    )
    with bounded(int(args.minutes * 60 + 300)), sandbox("soak") as box:
        started = time.monotonic()
        stats = asyncio.run(_soak(box, args.minutes, args.connections, args.rate))
        elapsed = time.monotonic() - started
    total = sum(stats.statuses.values())
    warm = next(rss for t, rss in stats.samples if t >= WARMUP_SECONDS)
    end = stats.samples[-1][1]
    peak = max(rss for _, rss in stats.samples)
    growth = (end - warm) / warm * 100
    ok = stats.server_errors == 0 and not stats.errors and growth < args.max_growth
    print(
        f"  requests {total} ({total / elapsed:.0f}/s incl. setup), statuses {dict(stats.statuses)}"
    )
    print(f"  operations {dict(stats.ops)}")
    print(
        f"  latency p50 {stats.p(0.5):.1f} ms, p99 {stats.p(0.99):.1f} ms, max {stats.p(1):.1f} ms"
    )
    if stats.errors:
        print(f"  transport errors {dict(stats.errors)}")
    print(
        f"{'PASS' if ok else 'FAIL'} soak: 5xx {stats.server_errors}, transport errors "
        f"{sum(stats.errors.values())}, rss after warm-up {warm / 2**20:.1f} MiB, "
        f"end {end / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, growth {growth:+.1f}% "
        f"(limit {args.max_growth:g}%)",
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
