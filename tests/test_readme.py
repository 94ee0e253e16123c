"""The README's first session, run as written against a real `stateless serve` process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _session_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A first session", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README has no shell block in 'A first session'"
    return match.group(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_readme_session_works_as_written(tmp_path: Path) -> None:
    """On the embedded default, exactly what a newcomer runs after `make run`."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/readme.db",
        "STORAGE_LOCAL_PATH": str(tmp_path / "storage"),
        "PORT": str(port),
        "RUN_BACKGROUND_JOBS": "false",
    }
    env.pop("ENVIRONMENT", None)
    bindir = Path(sys.executable).parent
    subprocess.run(
        [str(bindir / "stateless"), "migrate"],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = subprocess.Popen(
        [str(bindir / "stateless"), "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        (tmp_path / ".venv").symlink_to(bindir.parent)
        script = _session_block().replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        # as written, except that any HTTP error fails the run
        script = script.replace("curl -s ", "curl -sS --fail-with-body ")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert '"tenant":null' in out and '"status":"ok"' in out
        assert '"content":"hello"' in out and '"kinds":' in out and '"items":' in out
        assert '"status":"recorded"' in out
        assert '"status":"success"' in out and '"task_type":"email"' in out
        assert not (tmp_path / "demo-app.json").exists()
    finally:
        server.terminate()
        server.wait(timeout=20)
