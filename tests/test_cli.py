"""The `stateless` CLI as an operator runs it: real subprocesses, same configuration as the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stateless.config import Settings
from tests.conftest import ClientFactory
from tests.privacy import assert_not_stored


def run_cli(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SECRET_KEY": settings.secret_key,
        "AFFILIATE_SALT": settings.affiliate_salt,
        "ENVIRONMENT": "test",
    }
    return subprocess.run(
        [sys.executable, "-m", "stateless.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_create_list_rotate_revoke_delete(
    settings: Settings, make_client: ClientFactory, tmp_path: Path
) -> None:
    created = run_cli(settings, "tenants", "create", "cli-app", "--json", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    keys = json.loads(created.stdout)
    assert set(keys) == {"app_id", "publishable_key", "secret_key"}
    assert keys["publishable_key"].startswith("pk_") and keys["secret_key"].startswith("sk_")
    client = await make_client()
    headers = {"X-App-ID": "cli-app", "Authorization": f"Bearer {keys['secret_key']}"}
    assert (await client.get("/api/v1/admin/stats", headers=headers)).status_code == 200

    listed = run_cli(settings, "tenants", "list", "--json", cwd=tmp_path)
    rows = json.loads(listed.stdout)
    assert rows[0]["app_id"] == "cli-app"
    assert keys["secret_key"] not in listed.stdout  # only prefixes

    revoked = run_cli(
        settings, "tenants", "revoke-key", "cli-app", keys["secret_key"][:15], cwd=tmp_path
    )
    assert revoked.returncode == 0 and "revoked sk_" in revoked.stdout
    client.app.state.container.directory.invalidate()
    assert (await client.get("/api/v1/admin/stats", headers=headers)).status_code == 401

    rotated = run_cli(
        settings, "tenants", "rotate-key", "cli-app", "--grace-seconds", "0", "--json", cwd=tmp_path
    )
    new_sk = json.loads(rotated.stdout)["secret_key"]
    client.app.state.container.directory.invalidate()
    headers["Authorization"] = f"Bearer {new_sk}"
    assert (await client.get("/api/v1/admin/stats", headers=headers)).status_code == 200

    await assert_not_stored(settings, [keys["secret_key"], keys["publishable_key"], new_sk])
    deleted = run_cli(settings, "tenants", "delete", "cli-app", cwd=tmp_path)
    assert deleted.returncode == 0
    client.app.state.container.directory.invalidate()
    assert (await client.get("/api/v1/admin/stats", headers=headers)).status_code == 401


async def test_configure_stores_secrets_encrypted(
    settings: Settings, make_client: ClientFactory, tmp_path: Path
) -> None:
    run_cli(settings, "tenants", "create", "conf", cwd=tmp_path)
    result = run_cli(
        settings,
        "tenants",
        "configure",
        "conf",
        "--cors-origin",
        "https://a.example.com",
        "--cors-origin",
        "https://b.example.com",
        "--rate-limit",
        "bots.execute=60/minute",
        "--notify-email",
        "owner@example.com",
        "--email-from",
        "app@example.com",
        "--appstore-shared-secret",
        "shared-secret-123456",
        "--webhook-url",
        "https://hooks.example.com/in",
        "--mastodon-token",
        "masto-token-abcdef",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "cors_origins" in result.stdout and "webhook signing secret" in result.stdout
    whsec = result.stdout.split("(shown once): ")[1].strip()
    assert whsec.startswith("whsec_")
    await assert_not_stored(
        settings, ["owner@example.com", "shared-secret-123456", "masto-token-abcdef", whsec]
    )


@pytest.mark.parametrize(
    "args",
    [
        ("tenants", "create", "bad id"),
        ("tenants", "create", "x" * 65),
        ("tenants", "delete", "missing"),
        ("tenants", "revoke-key", "missing", "sk_123"),
        ("tenants", "configure", "missing", "--bundle-id", "x"),
        ("tenants", "configure", "exists", "--rate-limit", "nonsense"),
        ("tenants", "configure", "exists", "--cors-origin", "javascript:alert(1)"),
        ("tenants", "configure", "exists", "--notify-email", "not-an-email"),
        ("tenants", "configure", "exists", "--apns-key-file", "/nonexistent.p8"),
    ],
)
async def test_bad_input_exits_non_zero_with_one_line(
    settings: Settings, tmp_path: Path, args: tuple[str, ...]
) -> None:
    run_cli(settings, "tenants", "create", "exists", cwd=tmp_path)
    result = run_cli(settings, *args, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


async def test_duplicate_create_is_refused(settings: Settings, tmp_path: Path) -> None:
    assert run_cli(settings, "tenants", "create", "dup", cwd=tmp_path).returncode == 0
    again = run_cli(settings, "tenants", "create", "dup", cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr


async def test_cleanup_command_runs_once(settings: Settings, tmp_path: Path) -> None:
    result = run_cli(settings, "cleanup", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["errors"] == {}
