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

from tests.conftest import Client, TenantHandle

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


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert first_block and text.index("```sh") < text.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make run", "make test"]


def _seconds(text: str) -> int:
    number, unit = text.split()
    return int(number) * {"d": 86400, "h": 3600, "min": 60, "s": 1}[unit]


async def test_readme_data_table_is_the_data_inventory(
    client: Client, tenant: TenantHandle
) -> None:
    """The README's "What it keeps" table lists exactly what /admin/data-inventory answers."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## What it keeps, and for how long", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| `")
    ]
    readme = {
        row[0].strip("`"): {
            "description": row[1],
            "default_ttl_seconds": _seconds(row[2]),
            "max_ttl_seconds": _seconds(row[3]),
            "stored_as": row[4],
        }
        for row in rows
    }
    response = await client.get("/api/v1/admin/data-inventory", headers=tenant.sk)
    assert response.status_code == 200
    served = {kind.pop("kind"): kind for kind in response.json()["kinds"]}
    assert readme == served


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
    server_log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(bindir / "stateless"), "serve"],
        env=env,
        cwd=tmp_path,
        stdout=server_log,
        stderr=subprocess.STDOUT,
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
        assert "notify_email: set" in out and "you@example.com" not in out  # tenants show
        # what the README promises the `make run` terminal shows (development defaults)
        served = (tmp_path / "serve.log").read_text()
        assert f"listening_on=http://127.0.0.1:{port}" in served
        assert f"docs=http://127.0.0.1:{port}/docs" in served
        assert "To: you@example.com" in served and "Subject: Test" in served
    finally:
        server.terminate()
        server.wait(timeout=20)
        server_log.close()
