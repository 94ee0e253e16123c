"""Helpers to run real `stateless` processes: free ports, readiness polling, bounded waits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from bench.procs import wait_ready as wait_ready  # one readiness wait for tests and scripts

VENV_BIN = Path(sys.executable).parent
STATELESS = str(VENV_BIN / "stateless")

# Test secrets: long enough for every check, never used outside the tests.
SECRET_KEY = "ops-test-secret-key-with-more-than-32-characters"
AFFILIATE_SALT = "ops-test-affiliate-salt-with-more-than-32-chars"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(**overrides: str) -> dict[str, str]:
    """A clean environment, like a container's: nothing from the developer's shell or `.env`."""
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET_KEY,
        "AFFILIATE_SALT": AFFILIATE_SALT,
        "LOG_FORMAT": "json",
    }
    env.update(overrides)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STATELESS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Last resort cleanup for a process a test started (never anything else)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
