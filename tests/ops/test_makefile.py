"""`make run` installs only what serving needs; `make test` adds the dev lock on top, once.

Checked with `make -n` (print, do not run) in a copy of the project's Makefile and locks, with
the install stamps in each state a newcomer's checkout goes through.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _dry_run(workdir: Path, target: str) -> list[str]:
    result = subprocess.run(
        ["make", "-n", target], cwd=workdir, capture_output=True, text=True, timeout=60, check=True
    )
    return [line for line in result.stdout.splitlines() if "pip install" in line]


def _touch(path: Path, when: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path, (when, when))


def test_run_installs_runtime_only_and_test_adds_the_dev_lock(tmp_path: Path) -> None:
    for name in ("Makefile", "pyproject.toml", "requirements.lock", "requirements-runtime.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    old = time.time() - 3600
    for name in ("pyproject.toml", "requirements.lock", "requirements-runtime.lock"):
        os.utime(tmp_path / name, (old, old))

    fresh_run = _dry_run(tmp_path, "run")
    assert any("-r requirements-runtime.lock" in line for line in fresh_run)
    assert not any("-r requirements.lock" in line for line in fresh_run)
    assert all("--quiet" not in line and " -q " not in line for line in fresh_run)

    _touch(tmp_path / ".venv" / ".runtime-stamp", old + 60)  # after `make run`
    assert _dry_run(tmp_path, "run") == []
    after_run = _dry_run(tmp_path, "test")
    assert len(after_run) == 1 and "-r requirements.lock" in after_run[0]

    _touch(tmp_path / ".venv" / ".dev-stamp", old + 120)  # after `make test`
    assert _dry_run(tmp_path, "test") == []
    assert _dry_run(tmp_path, "run") == []  # test then run: nothing reinstalled
