"""The CLI tells a newcomer what it did and what to do next (real subprocesses, no .env).

`tenants configure --help` has an example for every option, `tenants show` prints settings with
secrets masked, `migrate` names the database and says whether it created, upgraded or left it,
and commands run where there is no database neither create one nor print a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import typer

from stateless.cli import app as cli_app
from stateless.config import Settings
from stateless.migrations.runner import downgrade
from tests.conftest import base_settings
from tests.ops.procs import free_port
from tests.services import Services, asyncpg_url, unique_name

STATELESS = str(Path(sys.executable).parent / "stateless")


def _env(**values: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "ENVIRONMENT", "PORT", "HOST")
    }
    env.update(
        SECRET_KEY="cli-test-secret-key-with-more-than-32-characters",
        AFFILIATE_SALT="cli-test-affiliate-salt-with-more-than-32-chars",
        COLUMNS="200",
    )
    env.update(values)
    return env


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STATELESS, *args], env=_env(**env), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_every_configure_option_has_help_with_an_example() -> None:
    group: Any = typer.main.get_command(cli_app)
    configure = group.commands["tenants"].commands["configure"]
    options = [p for p in configure.params if p.param_type_name == "option" and p.name != "help"]
    assert len(options) >= 14
    for option in options:
        assert option.help and "E.g. --" in option.help, option.opts
    shown = _cli("tenants", "configure", "--help", cwd=Path.cwd())
    assert shown.returncode == 0
    assert "ROUTE=LIMIT" in shown.stdout and "bots.execute=60/minute" in shown.stdout


@pytest.mark.parametrize(
    "args",
    [("tenants", "list"), ("tenants", "show", "demo"), ("tenants", "create", "demo"), ("cleanup",)],
)
def test_no_database_here_says_which_file_and_to_migrate(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Run from a directory without the server's database: no stray var/, one clear line."""
    result = _cli(*args, cwd=tmp_path)
    line = _one_line_error(result)
    assert str(tmp_path / "var" / "stateless.db") in line
    assert "stateless migrate" in line
    assert not (tmp_path / "var").exists()


def test_database_without_tables_asks_for_migrate(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    line = _one_line_error(_cli("tenants", "list", cwd=tmp_path, DATABASE_URL=url))
    assert f"SQLite file {tmp_path / 'empty.db'} has no tables yet" in line
    assert "run `stateless migrate`" in line


def test_migrate_says_which_database_and_what_it_did(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'app.db'}"
    where = f"SQLite file {tmp_path / 'data' / 'app.db'}"
    created = _cli("migrate", cwd=tmp_path, DATABASE_URL=url)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(f"created the schema in {where} (revision ")
    again = _cli("migrate", cwd=tmp_path, DATABASE_URL=url)
    assert again.returncode == 0
    assert again.stdout.startswith(f"{where} is already at the latest revision (")
    assert "nothing to do" in again.stdout
    downgrade(base_settings(url), "0005")
    upgraded = _cli("migrate", cwd=tmp_path, DATABASE_URL=url)
    assert upgraded.stdout.startswith(f"upgraded {where} from revision 0005 to the latest (")


async def test_migrate_on_postgres_names_it_without_password(
    services: Services, tmp_path: Path
) -> None:
    name = unique_name("stateless_cli")
    conn = await asyncpg.connect(services.postgres_admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = asyncpg_url(services.postgres_admin_url, name).replace(
        "postgres@", "postgres:pw-secret@", 1
    )
    try:
        empty = _cli("tenants", "list", cwd=tmp_path, DATABASE_URL=url)
        line = _one_line_error(empty)
        assert "has no tables yet" in line and "stateless migrate" in line
        assert f"/{name}" in line and "pw-secret" not in line
        migrated = _cli("migrate", cwd=tmp_path, DATABASE_URL=url)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.startswith("created the schema in postgresql database postgresql://")
        assert f"/{name}" in migrated.stdout and "pw-secret" not in migrated.stdout
    finally:
        conn = await asyncpg.connect(services.postgres_admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def test_tenants_show_masks_secrets(settings: Settings, tmp_path: Path) -> None:
    env = {"DATABASE_URL": settings.database_url, "SECRET_KEY": settings.secret_key}
    assert _cli("tenants", "create", "shown", cwd=tmp_path, **env).returncode == 0
    configured = _cli(
        "tenants",
        "configure",
        "shown",
        "--bundle-id",
        "com.example.shown",
        "--notify-email",
        "owner@example.com",
        "--mastodon-token",
        "masto-token-abcdef",
        "--rate-limit",
        "bots.execute=60/minute",
        cwd=tmp_path,
        **env,
    )
    assert configured.returncode == 0, configured.stderr
    text = _cli("tenants", "show", "shown", cwd=tmp_path, **env)
    assert text.returncode == 0, text.stderr
    assert "bundle_id: com.example.shown" in text.stdout
    assert "rate_limits: bots.execute=60/minute" in text.stdout
    assert "notify_email: set" in text.stdout and "appstore_shared_secret: -" in text.stdout
    as_json = _cli("tenants", "show", "shown", "--json", cwd=tmp_path, **env)
    shown = json.loads(as_json.stdout)
    assert shown["app_id"] == "shown"
    assert shown["settings"]["bundle_id"] == "com.example.shown"
    assert shown["secrets"]["notify_email"] == "********"
    assert shown["secrets"]["apns_key_p8"] is None
    assert {k["kind"] for k in shown["keys"]} == {"publishable", "secret"}
    for output in (text.stdout, as_json.stdout):
        assert "owner@example.com" not in output and "masto-token" not in output
        assert "sk_" not in output.replace(shown["keys"][1]["prefix"], "").replace(
            shown["keys"][0]["prefix"], ""
        )
    missing = _one_line_error(_cli("tenants", "show", "nope", cwd=tmp_path, **env))
    assert "no tenant nope" in missing


def test_serve_on_a_taken_port_names_port_without_traceback(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}"
    assert _cli("migrate", cwd=tmp_path, DATABASE_URL=url).returncode == 0
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        started = time.monotonic()
        result = _cli("serve", cwd=tmp_path, DATABASE_URL=url, PORT=str(port))
    line = _one_line_error(result)
    assert f"port {port} is already in use" in line and "PORT=" in line
    assert time.monotonic() - started < 30
    missing = _one_line_error(_cli("serve", cwd=tmp_path, PORT=str(port)))
    assert "stateless migrate" in missing and not (tmp_path / "var").exists()
