"""GitHub Actions workflows, checked structurally (actionlint cannot be installed here) and the
deploy step's shell actually run: it skips cleanly without the secret and POSTs the hook with it."""

from __future__ import annotations

import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FULL_SHA = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict)
    # YAML 1.1 reads the bare key `on` as True
    if True in data:
        data["on"] = data.pop(True)
    return data


def all_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_every_action_is_pinned_to_a_full_commit_sha() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        for step in all_steps(load(path.name)):
            if "uses" in step:
                assert FULL_SHA.match(step["uses"]), f"{path.name}: {step['uses']} is not pinned"
                # the human-readable version stays next to the SHA for reviewers and Dependabot
                assert re.search(re.escape(step["uses"]) + r" # v\d+\.\d+\.\d+", text)


def test_ci_triggers_permissions_and_jobs() -> None:
    ci = load("ci.yml")
    assert ci["name"] == "CI"  # deploy.yml follows this name
    assert ci["on"]["push"]["branches"] == ["main"]
    assert "pull_request" in ci["on"]
    assert ci["permissions"] == {"contents": "read"}
    assert set(ci["jobs"]) == {"lint", "test", "image"}
    for job in ci["jobs"].values():
        assert job["runs-on"].startswith("ubuntu-") and job["runs-on"] != "ubuntu-latest"
        assert job["timeout-minutes"] <= 30
    lint_runs = " ".join(s.get("run", "") for s in ci["jobs"]["lint"]["steps"])
    for tool in ("ruff check src tests bench", "mypy", "hadolint Dockerfile"):
        assert tool in lint_runs
    install = " ".join(s.get("run", "") for s in all_steps(ci))
    assert "pip install -r requirements.lock" in install  # the lock, not loose ranges


def test_ci_runs_the_suite_on_postgres_and_redis_services() -> None:
    job = load("ci.yml")["jobs"]["test"]
    services = job["services"]
    assert services["postgres"]["image"].startswith("postgres:16.")
    assert services["redis"]["image"].startswith("redis:7.")
    for service in services.values():
        assert "--health-cmd" in service["options"]  # steps start once they answer
    assert services["postgres"]["ports"] == ["5432:5432"]
    assert services["redis"]["ports"] == ["6379:6379"]
    env = job["env"]
    assert env["TEST_DATABASE_URL"].startswith("postgresql://postgres:postgres@127.0.0.1:5432/")
    assert env["TEST_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    runs = " ".join(s.get("run", "") for s in job["steps"])
    # the README's command, so CI runs the suite in parallel as `make test` does everywhere
    assert "make test" in runs and "pg_dump --version" in runs
    # postgres:16 service, pg_dump 16 client: pg_dump refuses newer servers
    assert "postgresql-client-16" in runs


def test_image_job_builds_runs_and_stops_cleanly() -> None:
    runs = " ".join(s.get("run", "") for s in load("ci.yml")["jobs"]["image"]["steps"])
    assert "docker build" in runs
    assert "/health/ready" in runs
    assert "docker stop" in runs and ".State.ExitCode" in runs


def test_deploy_runs_only_after_successful_ci_on_main() -> None:
    deploy = load("deploy.yml")
    trigger = deploy["on"]["workflow_run"]
    assert trigger == {"workflows": ["CI"], "types": ["completed"], "branches": ["main"]}
    assert deploy["permissions"] == {"contents": "read"}
    (job,) = deploy["jobs"].values()
    assert "github.event.workflow_run.conclusion == 'success'" in job["if"]
    assert "github.event.workflow_run.event == 'push'" in job["if"]
    (step,) = job["steps"]
    assert step["env"]["RENDER_DEPLOY_HOOK_URL"] == "${{ secrets.RENDER_DEPLOY_HOOK_URL }}"
    # the secret reaches the shell as an env var, never interpolated into the script text
    assert "secrets." not in step["run"]


def _deploy_script() -> str:
    (job,) = load("deploy.yml")["jobs"].values()
    return str(job["steps"][0]["run"])


def _run_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "COMMIT": "0" * 40}
    return subprocess.run(
        ["bash", "-e", "-c", _deploy_script()],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deploy_skips_cleanly_without_the_secret() -> None:
    result = _run_deploy({"RENDER_DEPLOY_HOOK_URL": "", "RENDER_WORKER_DEPLOY_HOOK_URL": ""})
    assert result.returncode == 0, result.stderr
    assert "::notice title=Deploy skipped::" in result.stdout


def test_deploy_posts_both_hooks_and_fails_when_render_refuses() -> None:
    hits: list[tuple[str, str]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append((self.command, self.path))
            status = 500 if "refuse" in self.path else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ok = _run_deploy(
            {
                "RENDER_DEPLOY_HOOK_URL": f"{base}/deploy/srv-web?key=k1",
                "RENDER_WORKER_DEPLOY_HOOK_URL": f"{base}/deploy/srv-worker?key=k2",
            }
        )
        assert ok.returncode == 0, ok.stderr
        assert hits == [("POST", "/deploy/srv-web?key=k1"), ("POST", "/deploy/srv-worker?key=k2")]
        assert "key=k1" not in ok.stdout + ok.stderr  # the hook URL is a secret
        failed = _run_deploy(
            {"RENDER_DEPLOY_HOOK_URL": f"{base}/refuse", "RENDER_WORKER_DEPLOY_HOOK_URL": ""}
        )
        assert failed.returncode != 0
    finally:
        server.shutdown()
        server.server_close()
