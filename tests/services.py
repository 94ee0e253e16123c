"""Find or start the real Postgres and Redis the suite needs; fail loudly when neither works.

Order: TEST_DATABASE_URL / TEST_REDIS_URL, then the usual local ports, then throwaway servers
started from installed binaries (initdb/pg_ctl, redis-server). Never a silent skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


class ServiceUnavailableError(RuntimeError):
    pass


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return candidate
    return None


@dataclass
class Services:
    postgres_admin_url: str  # a libpq-style URL to a database we may CREATE DATABASE from
    redis_url: str
    _cleanups: list[object] = field(default_factory=list)

    def close(self) -> None:
        for proc in self._cleanups:
            if isinstance(proc, subprocess.Popen):
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            elif callable(proc):
                proc()


def _start_postgres(cleanups: list[object]) -> str:
    initdb, pg_ctl = _find_binary("initdb"), _find_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise ServiceUnavailableError(
            "No Postgres: set TEST_DATABASE_URL, run one on 127.0.0.1:5432, "
            "or install the server binaries (initdb, pg_ctl)"
        )
    datadir = tempfile.mkdtemp(prefix="stateless-pg-")
    port = _free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root; use the postgres account when we are root
        shutil.chown(datadir, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, initdb, "-D", datadir, "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            pg_ctl,
            "-D",
            datadir,
            "-o",
            f"-p {port} -k {datadir} -h 127.0.0.1",
            "-l",
            f"{datadir}/log",
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run([*run_as, pg_ctl, "-D", datadir, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(datadir, ignore_errors=True)  # its files go with it

    cleanups.append(stop)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _start_redis(cleanups: list[object]) -> str:
    binary = shutil.which("redis-server")
    if not binary:
        raise ServiceUnavailableError(
            "No Redis: set TEST_REDIS_URL, run one on 127.0.0.1:6379, or install redis-server"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    cleanups.append(proc)
    for _ in range(100):
        if _port_open("127.0.0.1", port):
            return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise ServiceUnavailableError("redis-server did not start")


def discover() -> Services:
    cleanups: list[object] = []
    pg = os.environ.get("TEST_DATABASE_URL")
    if pg:
        pg = pg.replace("postgresql+asyncpg://", "postgresql://")
    elif _port_open("127.0.0.1", 5432):
        pg = "postgresql://postgres@127.0.0.1:5432/postgres"
    else:
        pg = _start_postgres(cleanups)
    redis = os.environ.get("TEST_REDIS_URL")
    if not redis:
        redis = (
            "redis://127.0.0.1:6379/0" if _port_open("127.0.0.1", 6379) else _start_redis(cleanups)
        )
    return Services(postgres_admin_url=pg, redis_url=redis, _cleanups=cleanups)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def asyncpg_url(libpq_url: str, database: str) -> str:
    base, _, _ = libpq_url.rpartition("/")
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + database


def libpq_url(libpq_admin: str, database: str) -> str:
    base, _, _ = libpq_admin.rpartition("/")
    return base + "/" + database


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'stateless.db'}"
