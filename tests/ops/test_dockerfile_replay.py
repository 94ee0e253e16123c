"""No Docker engine here: replay the Dockerfile's own RUN/COPY/ENV/CMD lines in a clean venv.

Absolute image paths (/opt/venv, /build, /app) are mapped under a temporary root; the base
image's `python` is this interpreter's base Python. Runtime-stage RUN lines (user creation) are
not replayed, only checked. Then the image's CMD starts the server with the image's ENV (HOST
forced to 127.0.0.1, as a test may only listen there), the image's HEALTHCHECK must pass, and
SIGTERM must stop it with status 0. Slow (~30 s: a venv and pip from the lock), so it is one test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.ops.dockerfile import ROOT, exec_form, healthcheck_command, parse
from tests.ops.procs import free_port, stop, wait_ready

IMAGE_ROOTS = ("/opt/venv", "/build", "/app")
PASS_THROUGH = re.compile(r"^(PIP_|UV_|HTTPS?_PROXY$|NO_PROXY$|SSL_CERT|REQUESTS_CA)", re.I)


def _mapper(root: Path):
    pattern = re.compile(
        r"(?<![\w./-])(" + "|".join(map(re.escape, IMAGE_ROOTS)) + r")(?=/|\s|:|$)"
    )

    def mapped(text: str) -> str:
        return pattern.sub(lambda m: str(root) + m.group(1), text)

    return mapped


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def _copy_from_context(args: str, workdir: Path) -> None:
    *sources, dest = args.split()
    target = workdir / dest
    for source in sources:
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(
                origin,
                target,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
                dirs_exist_ok=True,
            )
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target / origin.name)


def test_dockerfile_builds_and_serves_when_replayed(tmp_path: Path) -> None:
    _, (builder, runtime) = parse()
    root = tmp_path / "image"
    mapped = _mapper(root)
    base_bin = tmp_path / "base-image-bin"
    base_bin.mkdir()
    (base_bin / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    host = {k: v for k, v in os.environ.items() if PASS_THROUGH.match(k)}
    env = {"PATH": f"{base_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), **host}

    # --- builder stage
    workdir = root
    for instruction in builder.instructions:
        if instruction.keyword == "ENV":
            for key, value in builder.env().items():
                env[key] = _expand(mapped(value), env)
        elif instruction.keyword == "WORKDIR":
            workdir = Path(mapped(instruction.args))
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            assert not instruction.args.startswith("--from")
            _copy_from_context(instruction.args, workdir)
        elif instruction.keyword == "RUN":
            result = subprocess.run(
                ["sh", "-c", mapped(instruction.args)],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"RUN {instruction.args}\n{result.stderr[-3000:]}"
    venv = Path(mapped("/opt/venv"))
    python = venv / "bin" / "python"
    assert (venv / "bin" / "stateless").exists()
    for absent in ("pip", "setuptools", "pytest", "ruff", "mypy", "moto", "hypothesis"):
        probe = subprocess.run([str(python), "-c", f"import {absent}"], capture_output=True)
        assert probe.returncode != 0, f"{absent} is in the runtime image"

    # --- runtime stage
    run_env = {"PATH": f"{base_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    app_dir = root
    for instruction in runtime.instructions:
        if instruction.keyword == "ENV":
            for key, value in runtime.env().items():
                run_env[key] = _expand(mapped(value), run_env)
        elif instruction.keyword == "WORKDIR":
            app_dir = Path(mapped(instruction.args))
            app_dir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            source, dest = instruction.args.removeprefix("--from=builder ").split()
            assert mapped(source) == mapped(dest)  # the venv is used in place, at the same path
        elif instruction.keyword == "RUN":
            # user and directory setup only; it needs root and is not replayed here
            assert re.fullmatch(r"[\w\s/:.,&-]+", instruction.args), instruction.args
            assert "groupadd" in instruction.args or "mkdir" in instruction.args
    port = free_port()
    run_env.update({"HOST": "127.0.0.1", "PORT": str(port)})  # `docker run -e ...`
    (cmd,) = runtime.all("CMD")
    argv = exec_form(cmd.args)
    argv[0] = shutil.which(argv[0], path=run_env["PATH"]) or argv[0]
    assert argv[0].startswith(str(venv)), argv
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=app_dir, env=run_env, stdout=log, stderr=log)
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_ready(base_url, proc, timeout=60)
            health = subprocess.run(
                healthcheck_command(runtime), env=run_env, cwd=app_dir, timeout=10
            )
            assert health.returncode == 0, "the image's HEALTHCHECK fails against a ready server"
            banner = httpx.get(f"{base_url}/", timeout=5)
            assert banner.status_code == 200 and banner.json()["tenant"] is None
            # migrated on start: the embedded SQLite database lives in /app/var
            assert (app_dir / "var" / "stateless.db").exists()
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert time.monotonic() - started < 30
        finally:
            stop(proc)
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records, "LOG_FORMAT=json from the image gives JSON log lines"
    assert any(r.get("route") == "/health/ready" for r in records)
