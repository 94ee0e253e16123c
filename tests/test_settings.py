"""Settings: production refuses guessable secrets, naming each; hosted URLs get the async driver."""

from __future__ import annotations

import pytest

from stateless.config import Settings, UnsafeSettingsError
from stateless.main import create_app


def test_production_refuses_default_and_short_secrets_naming_each() -> None:
    settings = Settings(
        _env_file=None,
        environment="production",
        affiliate_salt="short",
        aws_access_key_id="minioadmin",
        aws_secret_access_key="minioadmin",
    )
    with pytest.raises(UnsafeSettingsError) as caught:
        create_app(settings)
    message = str(caught.value)
    for name in ("SECRET_KEY", "AFFILIATE_SALT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name in message
    assert "shorter than 32" in message
    assert "minioadmin" not in message.replace("the minioadmin default", "")


def test_production_starts_with_strong_secrets() -> None:
    settings = Settings(
        _env_file=None, environment="production", secret_key="s" * 40, affiliate_salt="a" * 40
    )
    assert create_app(settings).title == "stateless-backend"


def test_development_allows_defaults() -> None:
    assert create_app(Settings(_env_file=None, environment="development")) is not None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgresql://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("postgresql+asyncpg://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
    ],
)
def test_database_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert Settings(_env_file=None, database_url=given).database_url == expected


def test_env_example_documents_every_setting_and_loads_as_is(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / ".env.example"
    names = {
        line.split("=", 1)[0].strip()
        for line in example.read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    }
    missing = {field.upper() for field in Settings.model_fields} - names
    assert not missing, f".env.example lacks {sorted(missing)}"
    (tmp_path / ".env").write_text(example.read_text())
    monkeypatch.chdir(tmp_path)
    for name in names:
        monkeypatch.delenv(name, raising=False)
    loaded = Settings()
    assert loaded.database_url.startswith("sqlite+aiosqlite")
    assert loaded.redis_url is None and loaded.previous_secret_keys == []
