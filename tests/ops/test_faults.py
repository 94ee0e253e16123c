"""`make faults` as a test: the four fault scenarios (bench/faults.py) must all pass.

Runs the real script in a subprocess (~1 minute): throwaway Postgres and Redis from the
installed binaries, real `stateless serve` / `stateless worker` processes, Postgres stopped
under load, Redis killed, SIGTERM with ~50 requests in flight, the cleanup leader SIGKILLed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("postgres-down", "redis-down", "sigterm-under-load", "leader-killed")


def test_fault_scenarios_all_pass() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.faults"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = done.stdout + done.stderr[-4000:]
    assert done.returncode == 0, report
    for name in SCENARIOS:
        assert any(line.startswith(f"PASS {name} ") for line in done.stdout.splitlines()), report
    assert "4/4 passed" in done.stdout, report
