"""`make bench`: our API (one uvicorn worker, Postgres + Redis) against its floor, driven by the
same load generator at 64 connections, one line per scenario:

    <scenario>: ours <N> req/s, <floor|bare> <M> req/s, ratio <R>, p99 <X> ms

A scenario that touches the database is compared with the floor (bench/floor_app.py: the same
statements and crypto on the raw driver, pool sized like ours); one that does not, with a bare
FastAPI app (bench/baseline_app.py). `*-sqlite` scenarios run ours on SQLite against a floor on
one aiosqlite connection with the same pragmas. An indented line under each gives the evidence:
the load generator's CPU (it must not be the bottleneck), the server's CPU, the slowest
request, and the database connections opened after warm-up (the pool must not churn).

`wrk` drives the load when it is installed (else the Python generator in bench/loadgen.py); the
first line says which. Quick single scenario: `make bench BENCH_ARGS="--only register-token
--seconds 3"`. Everything runs on 127.0.0.1 in a throwaway Postgres database, SQLite file and
Redis key prefix; it stops by itself. BENCH_DATABASE_URL / BENCH_REDIS_URL choose the servers.

`--before GIT_REF` serves that commit's tree too, beside this one, on the same database against
the same reference and in the same alternating rounds, and prints the change in each ratio: two
separate runs differ by more than a change's effect (run-to-run drift reached 0.14 here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import asyncpg
import httpx

from bench.loadgen import build_request, run_load

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


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


@dataclass(frozen=True)
class Scenario:
    """One request shape, rendered for the Python generator (bytes) and for wrk (Lua)."""

    method: str
    path: str
    headers: dict[str, str]
    reference: str  # "floor" (touches the database) or "bare"
    body: Callable[[int], bytes] | None = None
    lua_body: str | None = None  # a Lua expression of the request counter `i`
    sqlite: bool = False

    def raw(self, host: str) -> Callable[[int], bytes]:
        body = self.body
        return lambda i: build_request(
            self.method, self.path, host, self.headers, body(i) if body else b""
        )

    def lua(self, tokens: list[str]) -> str:
        headers = ", ".join(f'["{k}"] = "{v}"' for k, v in self.headers.items())
        table = ", ".join(f'"{t}"' for t in tokens)
        body = self.lua_body or "nil"
        checks = ", ".join(f'"{t}"' for t in CHECK_TOKENS)
        return (
            f"local tokens = {{{table}}}\n"
            f"local check_tokens = {{{checks}}}\n"
            "local i = 0\n"
            f"local headers = {{{headers}}}\n"
            "request = function()\n"
            "  i = i + 1\n"
            f'  return wrk.format("{self.method}", "{self.path}", headers, {body})\n'
            "end\n"
            # the whole latency histogram (value in us, count), to combine rounds exactly
            "done = function(summary, latency, requests)\n"
            "  for n = 1, #latency do\n"
            "    local value, count = latency(n)\n"
            '    io.write(string.format("LATENCY %d %d\\n", value, count))\n'
            "  end\n"
            "end\n"
        )


# Subjects /check asks about: none has bought, the commonest check (a free user at launch).
CHECK_TOKENS = [str(uuid.UUID(int=n + 1)) for n in range(30)]


def scenarios(
    app_id: str, pk: str, sk: str, draft_id: str, tokens: list[str]
) -> dict[str, Scenario]:
    json_h = {"Content-Type": "application/json", "X-App-ID": app_id}
    pk_h = {**json_h, "Authorization": f"Bearer {pk}"}
    sk_h = {**json_h, "Authorization": f"Bearer {sk}"}

    def body(obj: object) -> bytes:
        return json.dumps(obj).encode()

    register = Scenario(
        "POST",
        "/api/v1/ios/register-token",
        pk_h,
        "floor",
        lambda i: body({"token": tokens[i % len(tokens)], "device_id": f"device-{i % 20000}"}),
        '\'{"token": "\' .. tokens[i % #tokens + 1] .. \'", "device_id": "device-\' .. (i % 20000) .. \'"}\'',
    )
    create = Scenario(
        "POST",
        "/api/v1/drafts",
        pk_h,
        "floor",
        lambda i: body({"content": f"benchmark draft content {i}"}),
        "'{\"content\": \"benchmark draft content ' .. i .. '\"}'",
    )
    return {
        "health": Scenario("GET", "/health", {"X-App-ID": app_id}, "bare"),
        "affiliate-generate": Scenario(
            "POST",
            "/api/v1/affiliate/generate",
            pk_h,
            "bare",
            lambda i: body({"code_id": f"user-{i % 5000}"}),
            "'{\"code_id\": \"user-' .. (i % 5000) .. '\"}'",
        ),
        "register-token": register,
        "drafts-read": Scenario("GET", f"/api/v1/drafts/{draft_id}", pk_h, "floor"),
        "drafts-create": create,
        "bots-execute-async": Scenario(
            "POST",
            "/api/v1/bots/execute",
            sk_h,
            "floor",
            lambda i: body(
                {
                    "task_type": "email",
                    "mode": "async",
                    "context": {"to": "bench@example.com", "subject": f"bench {i}", "text": "hi"},
                }
            ),
            '\'{"task_type": "email", "mode": "async", "context": {"to": "bench@example.com",'
            ' "subject": "bench \' .. i .. \'", "text": "hi"}}\'',
        ),
        "entitlement-check": Scenario(
            "POST",
            "/api/v1/entitlements/check",
            pk_h,
            "floor",
            lambda i: body({"app_account_token": CHECK_TOKENS[i % len(CHECK_TOKENS)]}),
            "'{\"app_account_token\": \"' .. check_tokens[i % #check_tokens + 1] .. '\"}'",
        ),
        "register-token-sqlite": replace(register, sqlite=True),
        "drafts-create-sqlite": replace(create, sqlite=True),
    }


@dataclass
class Measured:
    rate: float = 0.0
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    non2xx: int = 0
    errors: int = 0
    seconds: float = 0.0
    generator_cpu: float = 0.0  # seconds of CPU the load generator used
    server_cpu: float = 0.0  # seconds of CPU the measured server used
    connections_opened: int | None = None
    # every request's latency, in microseconds -> how many (wrk's histogram, or the Python
    # generator's list), so rounds combine into one distribution
    latency_us: dict[int, int] = field(default_factory=dict)

    def percentile_ms(self, q: float) -> float:
        total = sum(self.latency_us.values())
        if not total:
            return float("nan")
        rank = q * total
        seen = 0
        for value in sorted(self.latency_us):
            seen += self.latency_us[value]
            if seen >= rank:
                return value / 1000
        return max(self.latency_us) / 1000


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> Measured:
    m = Measured()
    if found := re.search(r"Requests/sec:\s+([\d.]+)", out):
        m.rate = float(found.group(1))
    if found := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        m.p99_ms = _ms(found.group(1))
    if found := re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", out, re.M):
        m.max_ms = _ms(found.group(1))
    if found := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        m.non2xx = int(found.group(1))
    if found := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        m.errors = sum(int(g) for g in found.groups())
    for value, count in re.findall(r"^LATENCY (\d+) (\d+)$", out, re.M):
        m.latency_us[int(value)] = m.latency_us.get(int(value), 0) + int(count)
    return m


def process_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ConnectionWatch:
    """Counts database connections opened after warm-up: pg_stat_activity polled every 20 ms
    (backend_start after the mark), cross-checked with pg_stat_database.sessions."""

    def __init__(self, admin: asyncpg.Connection, database: str) -> None:
        self.admin, self.database = admin, database
        self.seen: set[int] = set()
        self.task: asyncio.Task[None] | None = None
        self.sessions_before = 0

    async def _sessions(self) -> int:
        value = await self.admin.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = $1", self.database
        )
        return int(value or 0)

    async def start(self) -> None:
        self.seen.clear()
        await self.admin.execute("SELECT pg_stat_clear_snapshot()")
        self.sessions_before = await self._sessions()
        mark = await self.admin.fetchval("SELECT now()")

        async def poll() -> None:
            while True:
                rows = await self.admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1"
                    " AND backend_start > $2 AND application_name <> 'floor'",
                    self.database,
                    mark,
                )
                self.seen.update(r["pid"] for r in rows)
                await asyncio.sleep(0.02)

        self.task = asyncio.create_task(poll())

    async def stop(self) -> int:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.admin.execute("SELECT pg_stat_clear_snapshot()")
        sessions = await self._sessions() - self.sessions_before
        return max(len(self.seen), sessions)


async def run_wrk(
    scenario: Scenario, port: int, tokens: list[str], connections: int, seconds: float
) -> Measured:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(scenario.lua(tokens))
    url = f"http://127.0.0.1:{port}"
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = await asyncio.create_subprocess_exec(
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "2s",
            "--latency",
            "-s",
            script.name,
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        os.unlink(script.name)
    measured = parse_wrk(out.decode())
    measured.seconds = seconds
    measured.generator_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return measured


async def run_python(scenario: Scenario, port: int, connections: int, seconds: float) -> Measured:
    started = time.process_time()
    result = await run_load(
        "127.0.0.1",
        port,
        scenario.raw("127.0.0.1"),
        connections=connections,
        seconds=seconds,
        warmup_seconds=0,
    )
    latency_us: dict[int, int] = {}
    for seconds_taken in result.latencies:
        micros = int(seconds_taken * 1e6)
        latency_us[micros] = latency_us.get(micros, 0) + 1
    return Measured(
        latency_us=latency_us,
        rate=result.rate,
        p99_ms=result.percentile_ms(0.99),
        max_ms=max(result.latencies, default=float("nan")) * 1000,
        non2xx=sum(n for s, n in result.statuses.items() if s >= 400),
        errors=result.errors,
        seconds=result.seconds,
        generator_cpu=time.process_time() - started,
    )


@dataclass
class Server:
    port: int
    pid: int


class Runner:
    def __init__(
        self, tool: str, connections: int, seconds: float, tokens: list[str], rounds: int
    ) -> None:
        self.tool, self.connections, self.seconds, self.tokens = tool, connections, seconds, tokens
        self.rounds = max(1, rounds)

    async def _load(self, scenario: Scenario, port: int, seconds: float) -> Measured:
        if self.tool == "wrk":
            return await run_wrk(scenario, port, self.tokens, self.connections, seconds)
        return await run_python(scenario, port, self.connections, seconds)

    async def _round(self, scenario: Scenario, server: Server, seconds: float) -> Measured:
        cpu = process_cpu(server.pid)
        measured = await self._load(scenario, server.port, seconds)
        measured.server_cpu = process_cpu(server.pid) - cpu
        return measured

    async def measure(
        self, scenario: Scenario, subjects: list[Server], watch: ConnectionWatch | None
    ) -> tuple[list[Measured], list[list[float]]]:
        """Every subject warmed up, then measured in alternating rounds (ours, [before,]
        reference, then the next order in turn), so a machine whose speed drifts during the run (other tenants of
        the host, CPU boost) shifts every side alike instead of whichever ran last. The last
        subject is the reference; the ratios are each other subject's rate over it, by round."""
        for subject in subjects:
            await self._load(scenario, subject.port, 3.0)  # warm-up: pools fill, caches load
        if watch is not None:
            await watch.start()
        length = self.seconds / self.rounds
        rounds: list[list[Measured]] = [[] for _ in subjects]
        for n in range(self.rounds):
            # each round starts one subject later: none always follows the same neighbour
            # (a write-heavy side leaves checkpoints and vacuum to whoever comes next)
            order = [(n + k) % len(subjects) for k in range(len(subjects))]
            for k in order:
                rounds[k].append(await self._round(scenario, subjects[k], length))
        combined = [combine(side) for side in rounds]
        if watch is not None:
            combined[0].connections_opened = await watch.stop()
        ratios = [
            [
                m.rate / t.rate if t.rate else float("nan")
                for m, t in zip(side, rounds[-1], strict=True)
            ]
            for side in rounds[:-1]
        ]
        return combined, ratios


def combine(rounds: list[Measured]) -> Measured:
    """Rounds of one side as one run: requests over total time, the p99 of every request of
    every round (from the merged latency histograms; the worst round's p99 when a generator
    gave none), the slowest request."""
    seconds = sum(m.seconds for m in rounds)
    merged: dict[int, int] = {}
    for m in rounds:
        for value, count in m.latency_us.items():
            merged[value] = merged.get(value, 0) + count
    combined = Measured(latency_us=merged)
    p99 = combined.percentile_ms(0.99) if merged else max(m.p99_ms for m in rounds)
    return Measured(
        latency_us=merged,
        rate=sum(m.rate * m.seconds for m in rounds) / seconds if seconds else 0.0,
        p99_ms=p99,
        max_ms=max(m.max_ms for m in rounds),
        non2xx=sum(m.non2xx for m in rounds),
        errors=sum(m.errors for m in rounds),
        seconds=seconds,
        generator_cpu=sum(m.generator_cpu for m in rounds),
        server_cpu=sum(m.server_cpu for m in rounds),
    )


def report(
    name: str,
    scenario: Scenario,
    ours: Measured,
    ref: Measured,
    tool: str,
    ratios: list[float] | None = None,
) -> str:
    ratio = ours.rate / ref.rate if ref.rate else float("nan")
    line = (
        f"{name}: ours {ours.rate:.0f} req/s, {scenario.reference} {ref.rate:.0f} req/s, "
        f"ratio {ratio:.2f}, p99 {ours.p99_ms:.1f} ms"
    )

    def share(cpu: float, m: Measured) -> str:
        return f"{100 * cpu / m.seconds:.0f}%" if m.seconds else "?"

    detail = (
        f"    ours: p50 {ours.percentile_ms(0.5):.1f} ms, max {ours.max_ms:.0f} ms,"
        f" server CPU {share(ours.server_cpu, ours)},"
        f" {tool} CPU {share(ours.generator_cpu, ours)}"
    )
    if ours.connections_opened is not None:
        detail += f", db connections opened after warm-up {ours.connections_opened}"
    if ours.non2xx or ours.errors:
        detail += f", non-2xx {ours.non2xx}, socket errors/timeouts {ours.errors}"
    detail += (
        f" | {scenario.reference}: p50 {ref.percentile_ms(0.5):.1f} ms, p99 {ref.p99_ms:.1f} ms,"
        f" server CPU {share(ref.server_cpu, ref)},"
        f" {tool} CPU {share(ref.generator_cpu, ref)}"
    )
    if ref.non2xx or ref.errors:
        detail += f", non-2xx {ref.non2xx}, socket errors/timeouts {ref.errors}"
    if ratios and len(ratios) > 1:
        detail += " | ratio by round " + " ".join(f"{r:.2f}" for r in ratios)
    return line + "\n" + detail


def report_before(
    ref_name: str, then: Measured, ref: Measured, now: Measured, ratios: list[list[float]]
) -> tuple[str, float]:
    """The tree before a change, measured in the same rounds against the same reference: its
    ratio, and the change in ratio (now minus before), overall and by round."""
    before_ratio = then.rate / ref.rate if ref.rate else float("nan")
    now_ratio = now.rate / ref.rate if ref.rate else float("nan")
    change = now_ratio - before_ratio
    by_round = " ".join(f"{a - b:+.2f}" for a, b in zip(ratios[0], ratios[1], strict=True))
    line = (
        f"    before ({ref_name}): {then.rate:.0f} req/s, ratio {before_ratio:.2f},"
        f" p99 {then.p99_ms:.1f} ms | change in ratio {change:+.2f} (by round {by_round})"
    )
    return line, change


def export_tree(ref: str, into: Path) -> Path:
    """A commit's files (git archive), for serving the tree before a change beside this one."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", ref], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def spawn(
    cmd: list[str], env: dict[str, str], profile_to: str | None = None
) -> subprocess.Popen[bytes]:
    if profile_to:
        cmd = [
            str(BIN / "py-spy"),
            "record",
            "-o",
            profile_to,
            "-f",
            "raw",
            "-r",
            "200",
            "--",
            *cmd,
        ]
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def server_pid(proc: subprocess.Popen[bytes], profiled: bool) -> int:
    """The serving process (py-spy runs it as its child)."""
    if not profiled:
        return proc.pid
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return int(children[0]) if children else proc.pid


def stateless(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "stateless"), *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def prepare_tenant(env: dict[str, str]) -> dict[str, str]:
    stateless(env, "migrate")
    keys: dict[str, str] = json.loads(stateless(env, "tenants", "create", "bench", "--json"))
    stateless(
        env,
        "tenants",
        "configure",
        "bench",
        "--rate-limit",
        "default=100000000/minute",
        "--rate-limit",
        "health=100000000/minute",
        "--rate-limit",
        "bots.execute=100000000/minute",
    )
    stateless(env, "entitlements", "set", "bench", "pro", "--product", "com.example.pro")
    return keys


async def main(
    seconds: float,
    connections: int,
    only: list[str] | None,
    tool: str,
    profile_dir: str | None = None,
    rounds: int = 4,
    before: str | None = None,
) -> None:
    name = f"stateless_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = ADMIN_URL.rpartition("/")
    workdir = Path(tempfile.mkdtemp(prefix=name))
    ours_port, bare_port, floor_port, peer_port, before_port = (free_port() for _ in range(5))
    before_tree = export_tree(before, workdir / "before") if before else None
    secret = secrets.token_urlsafe(48)
    env = {
        **os.environ,
        "ENVIRONMENT": "production",
        "SECRET_KEY": secret,
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
        "STORAGE_LOCAL_PATH": str(workdir / "storage"),
    }
    tokens = [secrets.token_hex(32) for _ in range(256)]
    wanted = [s for s in SCENARIO_NAMES if not only or s in only]
    runner = Runner(tool, connections, seconds, tokens, rounds)
    print(
        f"load generator: {tool} ({connections} connections, {seconds:g} s per side in"
        f" {max(1, rounds)} alternating rounds, one uvicorn worker each side)",
        flush=True,
    )
    peer = await sendgrid_peer(peer_port)
    procs: list[subprocess.Popen[bytes]] = []
    uvicorn = [
        str(BIN / "uvicorn"),
        "--no-access-log",
        "--log-level",
        "warning",
        "--host",
        "127.0.0.1",
    ]

    changes: dict[str, float] = {}

    def profile(side: str, db: str) -> str | None:
        return str(Path(profile_dir) / f"{side}-{db}.txt") if profile_dir else None

    async def phase(db: str, names: list[str], url: str) -> None:
        phase_env = {**env, "DATABASE_URL": url}
        keys = prepare_tenant(phase_env)
        floor_url = url.replace("sqlite+aiosqlite", "sqlite")
        floor_env = {
            **phase_env,
            "FLOOR_DATABASE_URL": floor_url,
            "FLOOR_POOL_SIZE": os.environ.get("DB_POOL_SIZE", "20"),
        }
        started = [
            spawn([str(BIN / "stateless"), "serve"], phase_env, profile("ours", db)),
            spawn(
                [*uvicorn, "--port", str(floor_port), "--factory", "bench.floor_app:app"],
                floor_env,
                profile("floor", db),
            ),
        ]
        if before_tree is not None:
            before_env = {
                **phase_env,
                "PORT": str(before_port),
                "PYTHONPATH": f"{before_tree / 'src'}{os.pathsep}{before_tree}",
            }
            started.append(spawn([str(BIN / "stateless"), "serve"], before_env))
        if db == "postgres":
            started.append(spawn([str(BIN / "stateless"), "worker"], phase_env))
            started.append(
                spawn([*uvicorn, "--port", str(bare_port), "bench.baseline_app:app"], phase_env)
            )
        procs.extend(started)
        wait_ready(f"http://127.0.0.1:{ours_port}/health/ready")
        wait_ready(f"http://127.0.0.1:{floor_port}/docs")
        if db == "postgres":
            wait_ready(f"http://127.0.0.1:{bare_port}/health")
        if before_tree is not None:
            wait_ready(f"http://127.0.0.1:{before_port}/health/ready")
        ours = Server(ours_port, server_pid(started[0], bool(profile_dir)))
        floor = Server(floor_port, server_pid(started[1], bool(profile_dir)))
        bare = Server(bare_port, started[-1].pid) if db == "postgres" else floor
        then = [Server(before_port, started[2].pid)] if before_tree is not None else []
        draft = httpx.post(
            f"http://127.0.0.1:{ours_port}/api/v1/drafts",
            headers={"X-App-ID": "bench", "Authorization": f"Bearer {keys['publishable_key']}"},
            json={"content": "benchmark draft content"},
        ).json()["id"]
        table = scenarios("bench", keys["publishable_key"], keys["secret_key"], draft, tokens)
        watch = ConnectionWatch(admin, name) if db == "postgres" else None
        for scenario_name in names:
            scenario = table[scenario_name]
            reference = floor if scenario.reference == "floor" else bare
            measured, ratios = await runner.measure(scenario, [ours, *then, reference], watch)
            mine, ref = measured[0], measured[-1]
            print(report(scenario_name, scenario, mine, ref, tool, ratios[0]), flush=True)
            if then:
                line, change = report_before(before or "", measured[1], ref, mine, ratios)
                changes[scenario_name] = change
                print(line, flush=True)
        for proc in started:
            proc.send_signal(signal.SIGINT if profile_dir else signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    try:
        pg = [s for s in wanted if not SCENARIOS_SQLITE.get(s)]
        lite = [s for s in wanted if SCENARIOS_SQLITE.get(s)]
        if pg:
            await phase("postgres", pg, f"{base}/{name}")
        if lite:
            await phase("sqlite", lite, f"sqlite+aiosqlite:///{workdir / 'bench.db'}")
        if profile_dir:
            print(f"py-spy profiles (raw, collapsed stacks) in {profile_dir}", flush=True)
        if changes:
            worst = max(changes, key=lambda k: abs(changes[k]))
            print(
                f"change against {before}: largest {changes[worst]:+.2f} ({worst});"
                f" {sum(abs(c) <= 0.05 for c in changes.values())} of {len(changes)}"
                " scenarios within 0.05",
                flush=True,
            )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        peer.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(workdir, ignore_errors=True)


SCENARIO_NAMES = list(scenarios("x", "x", "x", "x", ["0" * 64]))
SCENARIOS_SQLITE = {k: v.sqlite for k, v in scenarios("x", "x", "x", "x", ["0" * 64]).items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="split each side's seconds into this many rounds, alternating ours and reference",
    )
    parser.add_argument("--only", nargs="*", choices=SCENARIO_NAMES, help="scenarios to run")
    parser.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk when installed, else the Python generator",
    )
    parser.add_argument(
        "--before",
        metavar="GIT_REF",
        help="also serve this commit's tree (same database, same reference, same rounds) and"
        " print the change in each ratio: the check that a change does not cost speed",
    )
    parser.add_argument(
        "--profile-dir",
        help="record py-spy profiles (ours and the floor, same run) into this directory",
    )
    args = parser.parse_args()
    chosen = args.loadgen
    if chosen == "auto":
        chosen = "wrk" if shutil.which("wrk") else "python"
    if args.profile_dir:
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(
        main(
            args.seconds,
            args.connections,
            args.only,
            chosen,
            args.profile_dir,
            args.rounds,
            args.before,
        )
    )
