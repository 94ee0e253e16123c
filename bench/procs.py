"""Throwaway Postgres/Redis servers and real `stateless` processes for the fault and soak runs.

Everything listens on 127.0.0.1 on free ports, lives in one temporary directory, and is stopped
(processes killed, directory removed) when the `Sandbox` closes, whether the run passed, failed
or was interrupted. `bounded()` adds a hard wall-clock limit and turns SIGTERM/SIGALRM into an
exception so that cleanup always runs.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
STATELESS = str(BIN / "stateless")
HOST = "127.0.0.1"


class RunTimeout(BaseException):
    """The run exceeded its wall-clock bound or was told to stop (not an Exception: scenarios
    catch those, and this must end the whole run)."""


@contextmanager
def bounded(seconds: int) -> Iterator[None]:
    """Raise RunTimeout after `seconds`, or on SIGTERM, so `finally` blocks clean up."""

    def _stop(signum: int, _frame: Any) -> None:
        raise RunTimeout(f"stopped by signal {signum} (bound {seconds} s)")

    old_alarm = signal.signal(signal.SIGALRM, _stop)
    old_term = signal.signal(signal.SIGTERM, _stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if not candidates:
        raise RuntimeError(f"{name} not found (install the Postgres server binaries)")
    return candidates[0]


@dataclass
class Postgres:
    """A throwaway cluster in `datadir`; stop/start keep the data and the port."""

    datadir: str
    port: int
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self.run_as, _pg_binary("pg_ctl"), "-D", self.datadir, *args],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        self._ctl(
            "-o",
            f"-p {self.port} -k {self.datadir} -h {HOST} -c max_connections=200 -c fsync=on",
            "-l",
            f"{self.datadir}/log",
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def running(self) -> bool:
        return Path(self.datadir, "postmaster.pid").exists()


@dataclass
class Redis:
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server not found")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@dataclass
class Tenant:
    app_id: str
    pk: str
    sk: str

    def headers(self, secret: bool = False) -> dict[str, str]:
        return {
            "X-App-ID": self.app_id,
            "Authorization": f"Bearer {self.sk if secret else self.pk}",
        }


@dataclass
class Sandbox:
    """One temp dir, one Postgres, one Redis, and every process started for a run."""

    root: Path
    stack: ExitStack
    postgres: Postgres | None = None
    redis: Redis | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # -- servers -----------------------------------------------------------------------------
    def start_postgres(self) -> Postgres:
        datadir = str(self.root / "pg")
        os.mkdir(datadir)
        run_as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            shutil.chown(datadir, "postgres")
            os.chmod(self.root, 0o755)
            run_as = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*run_as, _pg_binary("initdb"), "-D", datadir, "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        pg = Postgres(datadir=datadir, port=free_port(), run_as=run_as)
        pg.start()
        self.postgres = pg

        def _stop_pg() -> None:
            if pg.running():
                try:
                    pg.stop("immediate")
                except (subprocess.SubprocessError, OSError) as exc:
                    print(f"  (could not stop throwaway postgres: {exc})", file=sys.stderr)

        self.stack.callback(_stop_pg)
        return pg

    def start_redis(self) -> Redis:
        redis = Redis(port=free_port())
        redis.start()
        self.redis = redis
        self.stack.callback(redis.stop)
        return redis

    # -- stateless processes -----------------------------------------------------------------
    def env(self, **overrides: str) -> dict[str, str]:
        assert self.postgres is not None
        env = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "ENVIRONMENT": "production",
            "SECRET_KEY": secrets.token_urlsafe(36)[:48],
            "AFFILIATE_SALT": secrets.token_urlsafe(36)[:48],
            "DATABASE_URL": self.postgres.url,
            "STORAGE_LOCAL_PATH": str(self.root / "storage"),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "WARNING",
            "RUN_BACKGROUND_JOBS": "false",
            "HOST": HOST,
        }
        if self.redis is not None:
            env["REDIS_URL"] = self.redis.url
        env.update(overrides)
        return env

    def cli(self, env: dict[str, str], *args: str) -> str:
        done = subprocess.run(
            [STATELESS, *args],
            env=env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"stateless {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout

    def setup_tenant(self, env: dict[str, str], app_id: str, *limits: str) -> Tenant:
        """Migrate, create a tenant and lift its limits so load is never limited."""
        self.cli(env, "migrate")
        keys = json.loads(self.cli(env, "tenants", "create", app_id, "--json"))
        args = ["tenants", "configure", app_id]
        for item in limits or ("default=1000000/minute",):
            args += ["--rate-limit", item]
        self.cli(env, *args)
        return Tenant(app_id, keys["publishable_key"], keys["secret_key"])

    def spawn(self, env: dict[str, str], *args: str, log_name: str) -> subprocess.Popen[bytes]:
        log = (self.root / log_name).open("ab")
        self.stack.callback(log.close)
        proc = subprocess.Popen(
            [STATELESS, *args], env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        self.stack.callback(kill, proc)
        return proc

    def serve(self, env: dict[str, str], log_name: str = "serve.log") -> tuple[str, Any]:
        port = env.get("PORT") or str(free_port())
        env = {**env, "PORT": port}
        proc = self.spawn(env, "serve", log_name=log_name)
        base = f"http://{HOST}:{port}"
        wait_ready(base, proc)
        return base, proc

    def log_tail(self, log_name: str, chars: int = 2000) -> str:
        return self.log_text(log_name)[-chars:]

    def log_text(self, log_name: str) -> str:
        path = self.root / log_name
        return path.read_text(errors="replace") if path.exists() else ""


def kill(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this run started (never anything else)."""
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"  (process {proc.pid} did not exit after SIGKILL)", file=sys.stderr)


def wait_ready(base_url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            response = httpx.get(f"{base_url}/health/ready", timeout=2.0)
            if response.status_code == 200:
                return
            last = response.status_code
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"server not ready within {timeout} s: {last}")


@contextmanager
def sandbox(prefix: str, *, redis: bool = True) -> Iterator[Sandbox]:
    """Temp dir + throwaway Postgres (+ Redis); all of it gone when the block exits."""
    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix=f"stateless-{prefix}-"))
        stack.callback(shutil.rmtree, root, True)
        box = Sandbox(root=root, stack=stack)
        box.start_postgres()
        if redis:
            box.start_redis()
        yield box


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until `check()` was true, or None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(interval)
    return None
